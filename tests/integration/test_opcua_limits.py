"""What one OPC UA client may claim: its share of connections, sessions, subscriptions and
monitored items, and the spec's Bad code past it, while other clients keep theirs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.ua.ua_binary import uatcp_to_binary

from bridge.http.server import HttpFace, HttpSettings
from bridge.opcua.session_limits import REFUSALS, SessionLimits
from tests.integration.http_calls import scrape, value
from tests.integration.opcua_rig import from_another_host, opcua_rig

LIMITS = SessionLimits(
    max_sessions=6, max_anonymous_sessions=3, max_subscriptions_per_session=4,
    max_monitored_items_per_session=30,
)  # fmt: skip


@pytest.fixture
async def rig(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data", limits=LIMITS) as rig:
        yield rig  # its own client holds one anonymous session


class Quiet:
    def datachange_notification(self, node, value, data) -> None:
        pass


async def test_one_client_cannot_take_every_subscription_slot(rig):
    greedy = [await rig.client.create_subscription(100, Quiet()) for _ in range(4)]
    with pytest.raises(ua.UaStatusCodeError, match="BadTooManySubscriptions"):
        await rig.client.create_subscription(100, Quiet())
    other = Client(rig.url, timeout=10)
    await other.connect()
    try:
        mine = await other.create_subscription(100, Quiet())  # room for another client
        assert mine.subscription_id
    finally:
        await other.disconnect()
    server_subs = rig.face.server.iserver.subscription_service.subscriptions
    assert len(server_subs) == 4  # the other client's went with its session
    for sub in greedy:
        await sub.delete()


async def test_monitored_items_past_the_share_get_bad_too_many_monitored_items(rig):
    sub = await rig.client.create_subscription(100, Quiet())
    stations = rig.node("Plant.Lines.ac_line.Stations")
    nodes = []
    for station in await stations.get_children():
        for child in await station.get_children():
            if (await child.read_node_class()) == ua.NodeClass.Variable:
                nodes.append(child)
    assert len(nodes) > 35
    results = await sub.subscribe_data_change(nodes[:35], sampling_interval=100)
    good = [r for r in results if isinstance(r, int)]
    bad = [r for r in results if isinstance(r, ua.StatusCode)]
    assert len(good) == 30
    assert [r.value for r in bad] == [ua.StatusCodes.BadTooManyMonitoredItems] * 5
    await sub.unsubscribe(good[:10])
    more = await sub.subscribe_data_change(nodes[35:40] or nodes[:5], sampling_interval=100)
    assert all(isinstance(r, int) for r in more)  # deleted items gave their room back
    await sub.delete()


async def test_anonymous_sessions_are_capped_and_free_again_when_one_leaves(rig):
    clients = []
    try:
        for _ in range(2):  # with the rig's own: three anonymous sessions
            client = Client(rig.url, timeout=10)
            await client.connect()
            clients.append(client)
        fourth = Client(rig.url, timeout=10)
        with pytest.raises(ua.UaStatusCodeError, match="BadTooManySessions"):
            await fourth.connect()
        await clients.pop().disconnect()
        again = Client(rig.url, timeout=10)
        await again.connect()
        clients.append(again)
    finally:
        for client in clients:
            await client.disconnect()
    assert rig.face.sessions.refused["anonymous_sessions"] == 1


async def test_an_abandoned_session_is_timed_out_within_the_configured_bound(rig):
    assert rig.face.server.iserver.max_session_timeout_ms == LIMITS.max_session_timeout_s * 1000
    client = Client(rig.url, timeout=10)
    client.session_timeout = 3_600_000  # asks for an hour
    await client.connect()
    try:
        assert client.session_timeout <= LIMITS.max_session_timeout_s * 1000
    finally:
        await client.disconnect()


async def test_one_host_holds_its_share_of_connections_and_sessions_and_another_host_gets_in(
    ac_mapping, tmp_path
):
    """asyncua caps connections only for the whole server (1,000 from anyone): one host holding
    them shut every other client out. Now each client address has a share of both."""
    limits = SessionLimits(max_sessions_per_client=2, max_connections_per_client=4)
    async with opcua_rig(ac_mapping, tmp_path / "data", limits=limits) as rig:  # its client: one of each
        held, answers = [], []
        for _ in range(5):  # bare connections that say Hello: answered while the host has room
            reader, writer = await asyncio.open_connection(*_host_port(rig.url))
            writer.write(uatcp_to_binary(ua.MessageType.Hello, ua.Hello(EndpointUrl=rig.url)))
            held.append(writer)
            answers.append(await asyncio.wait_for(reader.read(3), 10))
            if answers[-1] != b"ACK":
                break
        assert answers == [b"ACK", b"ACK", b"ACK", b""]  # the fourth closed at once, unanswered
        assert rig.face.sessions.refused["connections_per_client"] == 1
        async with from_another_host(rig.url) as url, Client(url, timeout=10) as other:
            assert await other.nodes.server.read_browse_name()  # its own share
        for writer in held:
            writer.close()

        second = Client(rig.url, timeout=10)  # connections freed; sessions: the rig's and this one
        await _until_connects(second)
        try:
            with pytest.raises(ua.UaStatusCodeError, match="BadTooManySessions"):
                await Client(rig.url, timeout=10).connect()
            assert rig.face.sessions.refused["sessions_per_client"] == 1
            async with from_another_host(rig.url) as url, Client(url, timeout=10) as other:
                assert await other.nodes.server.read_browse_name()
        finally:
            await second.disconnect()


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("opc.tcp://").rstrip("/").rsplit(":", 1)
    return host, int(port)


async def _until_connects(client: Client, timeout_s: float = 10) -> None:
    """Connect once the server has seen the closed connections go (it learns it as the loop turns)."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                await client.connect()
                return
            except (ConnectionError, TimeoutError, ua.UaError):
                await asyncio.sleep(0.05)


async def test_metrics_say_what_opcua_clients_hold_and_were_refused(rig):
    """What an operator alerts on when a client hits its share (docs/metrics.md)."""
    http = HttpFace(rig.bridge, HttpSettings(port=0))
    http.metrics.opcua_claims = rig.face.claims  # as `linebridge run` wires it
    await http.start()
    try:
        series = await asyncio.to_thread(scrape, http.address)
        what = ("sessions", "connections", "client_addresses")
        held = {w: value(series, "linebridge_opcua_clients_hold", what=w) for w in what}
        assert held == dict.fromkeys(what, 1)  # the rig's own client
        assert {value(series, "linebridge_opcua_refused_total", limit=w) for w in REFUSALS} == {0}
        subscriptions = [await rig.client.create_subscription(100, Quiet()) for _ in range(4)]
        with pytest.raises(ua.UaStatusCodeError, match="BadTooManySubscriptions"):
            await rig.client.create_subscription(100, Quiet())
        series = await asyncio.to_thread(scrape, http.address)
        assert value(series, "linebridge_opcua_refused_total", limit="subscriptions_per_session") == 1
        for subscription in subscriptions:
            await subscription.delete()
    finally:
        await http.stop()


async def test_an_item_queues_at_most_its_share_however_it_asks_and_a_bad_one_fails_alone(rig):
    """asyncua gave a data item asking a queue of 0 its whole cap (10,000 values) and took a modified
    queue size as asked: a client that never asks for a publish grew the bridge without end (+15 MB
    in 80 s with 10,000 items on this line's slow telemetry, and rising). Part 4, 7.21: 0 or 1 is 1."""
    sub = await rig.client.create_subscription(100, Quiet())
    node = rig.node("Plant.Lines.ac_line.AcceptingOrders").nodeid

    message = ua.SimpleAttributeOperand(
        TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType), BrowsePath=[ua.QualifiedName("Message", 0)],
        AttributeId=ua.AttributeIds.Value,
    )  # fmt: skip

    def item(queue: int, handle: int, events: bool = False, filtered: bool = True) -> Any:
        asked = ua.MonitoringParameters(ClientHandle=handle, QueueSize=queue, SamplingInterval=0)
        watched = ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value)
        if events:
            if filtered:
                asked.Filter = ua.EventFilter(SelectClauses=[message], WhereClause=ua.ContentFilter())
            server = ua.NodeId(ua.ObjectIds.Server)
            watched = ua.ReadValueId(NodeId=server, AttributeId=ua.AttributeIds.EventNotifier)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=watched, MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=asked
        )

    asked = [item(0, 1), item(1, 2), item(7, 3), item(10_000, 4), item(0, 5, events=True)]
    asked.append(item(0, 6, events=True, filtered=False))  # asyncua failed the whole request with it
    created = await rig.client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
        SubscriptionId=sub.subscription_id, TimestampsToReturn=ua.TimestampsToReturn.Both,
        ItemsToCreate=asked,
    ))  # fmt: skip
    assert [r.StatusCode.is_good() for r in created] == [True] * 5 + [False]
    assert created[5].StatusCode.value == ua.StatusCodes.BadMonitoredItemFilterInvalid
    share = SessionLimits().max_queue_size
    queues = [r.RevisedQueueSize for r in created[:5]]
    assert queues == [1, 1, 7, share, SessionLimits().max_event_queue_size]
    modified = await rig.client.uaclient.modify_monitored_items(ua.ModifyMonitoredItemsParameters(
        SubscriptionId=sub.subscription_id, TimestampsToReturn=ua.TimestampsToReturn.Both,
        ItemsToModify=[ua.MonitoredItemModifyRequest(
            MonitoredItemId=created[0].MonitoredItemId,
            RequestedParameters=ua.MonitoringParameters(ClientHandle=1, QueueSize=5_000, SamplingInterval=0),
        )],
    ))  # fmt: skip
    assert [r.RevisedQueueSize for r in modified] == [share]
    await sub.delete()
