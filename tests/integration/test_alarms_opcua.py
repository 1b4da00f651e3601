"""OPC UA Alarms & Conditions from outside: an asyncua client subscribed to alarm events on the
Server object sees a limit alarm of the real simulated line go active, acknowledges and confirms it
with a comment (an observer is refused), shelves and unshelves it, gets it again on
ConditionRefresh, and sees it return to normal; every step in the journal's alarm history."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.common.events import get_filter_from_event_type

from bridge.security.pki import Pki
from plc_sim.proxy import FaultMix, FaultyLink
from tests.integration.conftest import NODE_DIR
from tests.integration.opcua_rig import Events, opcua_rig
from tests.integration.secure_rig import secure_client, secured_rig

pytestmark = pytest.mark.slow

IDS = ua.ObjectIds
FURNACE = "furnace_temp_c"


def field(event: Any, name: str) -> Any:
    return getattr(event, name, None)


def condition(name: str, station: str, **expected: Any):
    """Matches an event of alarm `name` at `station` whose fields (ActiveState__Id for
    "ActiveState/Id") have the values given."""

    def match(event: Any) -> bool:
        if (field(event, "ConditionName"), field(event, "SourceName")) != (name, station):
            return False
        return all(field(event, key.replace("__", "/")) == value for key, value in expected.items())

    return match


def furnace(**expected: Any):
    return condition(FURNACE, "coil", **expected)


async def subscribe(client: Client) -> tuple[Events, Any]:
    events = Events(timeout_s=15)
    sub = await client.create_subscription(50, events)
    kinds = (IDS.AlarmConditionType, IDS.RefreshStartEventType, IDS.RefreshEndEventType)
    types = [client.get_node(ua.NodeId(kind)) for kind in kinds]
    await sub.subscribe_events(client.nodes.server, types)
    return events, sub


async def call(client: Client, object_id: ua.NodeId, method: int, *args: ua.Variant) -> ua.StatusCode:
    request = ua.CallMethodRequest(ObjectId=object_id, MethodId=ua.NodeId(method), InputArguments=list(args))
    try:
        (result,) = await client.uaclient.call([request])
    except ua.UaStatusCodeError as refused:  # a refused role is the whole request's answer
        return ua.StatusCode(refused.code)
    return result.StatusCode


def ack_args(event: Any, comment: str) -> tuple[ua.Variant, ua.Variant]:
    return (
        ua.Variant(event.EventId, ua.VariantType.ByteString),
        ua.Variant(ua.LocalizedText(comment), ua.VariantType.LocalizedText),
    )


async def test_a_limit_alarm_through_its_life_over_opcua(ac_mapping, tmp_path):
    async with (
        secured_rig(ac_mapping, tmp_path) as (rig, cert, _),
        secure_client(rig.url, cert, "olga", "olga-pw") as olga,
        secure_client(rig.url, cert, "otto", "otto-pw") as otto,
    ):
        events, sub = await subscribe(olga)
        await rig.bridge.write_setpoint("coil", "furnace_setpoint_c", 650)  # the furnace runs hot
        active = await events.until(furnace(ActiveState__Id=True, AckedState__Id=False))
        ns = await olga.get_namespace_index("urn:linebridge:ac_line")
        condition = ua.NodeId(f"Plant.Lines.ac_line.Stations.coil.Alarms.{FURNACE}", ns)
        assert active.NodeId == condition  # the ConditionId
        assert active.SourceNode == ua.NodeId("Plant.Lines.ac_line.Stations.coil", ns)
        assert active.Severity == 700
        assert active.Retain is True
        assert field(active, "ConfirmedState/Id") is False
        assert "above its high limit 630 °C" in active.Message.Text
        assert active.EventType == ua.NodeId(IDS.ExclusiveLevelAlarmType)
        station = olga.get_node(ua.NodeId("Plant.Lines.ac_line.Stations.coil", ns))
        conditions = await station.get_referenced_nodes(IDS.HasCondition)
        assert condition in [node.nodeid for node in conditions]

        acknowledge = IDS.AcknowledgeableConditionType_Acknowledge
        refused = await call(otto, condition, acknowledge, *ack_args(active, "not mine"))
        assert refused.value == ua.StatusCodes.BadUserAccessDenied  # an observer may only look
        wrong = ua.Variant(b"not-an-event", ua.VariantType.ByteString)
        assert (await call(olga, condition, acknowledge, wrong, ack_args(active, "x")[1])).value == (
            ua.StatusCodes.BadEventIdUnknown
        )
        assert (await call(olga, condition, acknowledge, *ack_args(active, "checking the burner"))).is_good()
        acked = await events.until(furnace(AckedState__Id=True))
        assert acked.Comment.Text == "checking the burner"
        assert acked.ClientUserId == "olga"
        again = await call(olga, condition, acknowledge, *ack_args(acked, "twice"))
        assert again.value == ua.StatusCodes.BadConditionBranchAlreadyAcked
        confirm = IDS.AcknowledgeableConditionType_Confirm
        assert (await call(olga, condition, confirm, *ack_args(acked, "burner trimmed"))).is_good()
        confirmed = await events.until(furnace(ConfirmedState__Id=True))
        assert confirmed.Retain is True  # still active
        remark = ack_args(confirmed, "gas supplier called")
        assert (await call(olga, condition, IDS.ConditionType_AddComment, *remark)).is_good()
        commented = await events.until(lambda e: furnace()(e) and e.Comment.Text == "gas supplier called")
        assert field(commented, "ConfirmedState/Id") is True  # a remark changes no state

        shelving = ua.NodeId(f"Plant.Lines.ac_line.Stations.coil.Alarms.{FURNACE}.ShelvingState", ns)
        hour = ua.Variant(3_600_000.0, ua.VariantType.Double)
        refused = await call(otto, shelving, IDS.ShelvedStateMachineType_TimedShelve, hour)
        assert refused.value == ua.StatusCodes.BadUserAccessDenied
        assert (await call(olga, shelving, IDS.ShelvedStateMachineType_TimedShelve, hour)).is_good()
        shelved = await events.until(furnace(SuppressedOrShelved=True))
        assert field(shelved, "ShelvingState/CurrentState").Text == "TimedShelved"
        # UnshelveTime counts down: each Read says the time left then, not the time left at the shelve
        left = olga.get_node(ua.NodeId(f"{shelving.Identifier}.UnshelveTime", ns))
        first = await left.read_value()
        assert 3_590_000 < first <= 3_600_000
        async with asyncio.timeout(5):
            while await left.read_value() > first - 20:  # noqa: ASYNC110 - polls the server, bounded
                await asyncio.sleep(0.01)
        too_long = ua.Variant(9 * 3_600_000.0, ua.VariantType.Double)
        assert (await call(olga, shelving, IDS.ShelvedStateMachineType_TimedShelve, too_long)).value == (
            ua.StatusCodes.BadShelvingTimeOutOfRange
        )
        assert (await call(olga, shelving, IDS.ShelvedStateMachineType_Unshelve)).is_good()
        await events.until(furnace(SuppressedOrShelved=False))
        assert (await call(olga, shelving, IDS.ShelvedStateMachineType_Unshelve)).value == (
            ua.StatusCodes.BadConditionNotShelved
        )
        assert (await call(olga, shelving, IDS.ShelvedStateMachineType_OneShotShelve)).is_good()
        await events.until(furnace(ShelvingState__CurrentState=ua.LocalizedText("OneShotShelved")))

        before = len(events.events)
        refresh = ua.Variant(sub.subscription_id, ua.VariantType.UInt32)
        conditions_type = ua.NodeId(IDS.ConditionType)
        missing = await call(olga, conditions_type, IDS.ConditionType_ConditionRefresh)
        assert missing.value == ua.StatusCodes.BadArgumentsMissing  # a status, not BadUnexpectedError
        flag = ua.Variant(True, ua.VariantType.Boolean)
        assert (await call(olga, shelving, IDS.ShelvedStateMachineType_TimedShelve, flag)).value == (
            ua.StatusCodes.BadInvalidArgument  # a Duration in ms, not a flag
        )
        assert (await call(olga, conditions_type, IDS.ConditionType_ConditionRefresh, refresh)).is_good()
        end = await events.until(lambda e: e.EventType == ua.NodeId(IDS.RefreshEndEventType))
        refreshed = events.events[before : events.events.index(end)]
        assert refreshed[0].EventType == ua.NodeId(IDS.RefreshStartEventType)
        assert [e.NodeId for e in refreshed[1:] if field(e, "ConditionName") == FURNACE] == [condition]

        await rig.bridge.write_setpoint("coil", "furnace_setpoint_c", 605)  # back to normal
        normal = await events.until(furnace(ActiveState__Id=False))
        assert normal.Retain is False  # acknowledged and confirmed: nothing left for an operator
        assert field(normal, "ShelvingState/CurrentState").Text == "Unshelved"  # a one-shot ends with it
        assert "back within its limits" in normal.Message.Text

        history = rig.bridge.journal.load_alarms(f"coil.{FURNACE}")
        assert [row["what"] for row in history] == [
            "activated",
            "acknowledged",
            "confirmed",
            "commented",
            "shelved",
            "unshelved",
            "shelved",
            "cleared",
        ]
        assert (history[1]["user"], history[1]["comment"]) == ("olga", "checking the burner")
        audit = [(r[1], r[2], r[4]) for r in rig.bridge.journal.load_audit()]
        assert ("alarm_ack", "olga", f"ok coil.{FURNACE}: checking the burner") in audit
        assert ("alarm_ack", "olga", f"refused coil.{FURNACE}: already acknowledged") in audit
        assert any(e == "denied" and u == "otto" for e, u, _ in audit)


async def read(client: Client, condition: ua.NodeId, path: str) -> Any:
    """A condition's state variable by its browse path ("ActiveState/Id"), as a browsing client finds it."""
    member = await client.get_node(condition).get_child([f"0:{name}" for name in path.split("/")])
    return await member.read_value()


async def test_a_disabled_condition_is_judged_but_tells_nobody_until_enabled(ac_mapping, tmp_path):
    """Part 9 Disable and Enable: a disabled condition raises one event (EnabledState false, not
    retained), answers no other method, and on Enable shows where it stands (here: active). Its
    state variables read what its last event said, before any event too."""
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        client = rig.client
        events, _ = await subscribe(client)
        condition = ua.NodeId(f"Plant.Lines.ac_line.Stations.coil.Alarms.{FURNACE}", rig.ns)
        states = ("ActiveState/Id", "EnabledState/Id", "Retain")
        assert [await read(client, condition, p) for p in states] == [False, True, False]
        assert (await read(client, condition, "ActiveState")).Text == "Inactive"
        assert await read(client, condition, "HighLimit") == 630.0
        active_state = await client.get_node(condition).get_child(["0:ActiveState"])
        assert (await active_state.read_type_definition()) == ua.NodeId(IDS.TwoStateVariableType)
        offline = ua.NodeId("Plant.Lines.ac_line.Stations.coil.Alarms.offline", rig.ns)
        assert (await read(client, offline, "ConditionClassId")) == ua.NodeId(IDS.SystemConditionClassType)
        assert (await read(client, offline, "NormalState")) == ua.NodeId()  # OffNormalAlarmType's own

        assert (await call(client, condition, IDS.ConditionType_Disable)).is_good()
        disabled = await events.until(furnace(EnabledState__Id=False))
        assert (disabled.Retain, field(disabled, "EnabledState").Text) == (False, "Disabled")
        assert await read(client, condition, "EnabledState/Id") is False
        assert await read(client, condition, "EventId") == disabled.EventId
        again = await call(client, condition, IDS.ConditionType_Disable)
        assert again.value == ua.StatusCodes.BadConditionAlreadyDisabled

        await rig.bridge.write_setpoint("coil", "furnace_setpoint_c", 650)  # hot: judged, told nobody
        async with asyncio.timeout(15):
            while not rig.bridge.alarms.get(f"coil.{FURNACE}").active:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.02)
        assert not [e for e in events.events if furnace(ActiveState__Id=True)(e)]
        acknowledge = IDS.AcknowledgeableConditionType_Acknowledge
        refused = await call(client, condition, acknowledge, *ack_args(disabled, "not now"))
        assert refused.value == ua.StatusCodes.BadConditionDisabled

        assert (await call(client, condition, IDS.ConditionType_Enable)).is_good()
        enabled = await events.until(furnace(EnabledState__Id=True, ActiveState__Id=True))
        assert enabled.Retain is True
        states = ("ActiveState/Id", "AckedState/Id", "Retain")
        assert [await read(client, condition, p) for p in states] == [True, False, True]
        assert await read(client, condition, "Severity") == enabled.Severity == 700
        assert (await read(client, condition, "LimitState/CurrentState")).Text == "High"
        assert await read(client, condition, "LimitState/CurrentState/Id") == ua.NodeId(
            IDS.ExclusiveLimitStateMachineType_High
        )
        assert await read(client, condition, "EventId") == enabled.EventId
        assert (await call(client, condition, IDS.ConditionType_Enable)).value == (
            ua.StatusCodes.BadConditionAlreadyEnabled
        )
        async with asyncio.timeout(5):  # alarm history is written in batches, off the loop
            while len(history := rig.bridge.journal.load_alarms(f"coil.{FURNACE}")) < 2:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.02)
        assert [row["what"] for row in history] == ["disabled", "enabled"]

        # Part 11 event history: the journal's changes, as the events they were
        kinds = [IDS.AlarmConditionType]
        past = [e for e in await client.nodes.server.read_event_history(evtypes=kinds) if furnace()(e)]
        assert [(field(e, "EnabledState/Id"), field(e, "ActiveState/Id")) for e in past] == [
            (False, False), (True, True)
        ]  # fmt: skip
        assert past[1].NodeId == condition
        assert past[1].Severity == 700
        assert past[1].EventType == ua.NodeId(IDS.ExclusiveLevelAlarmType)
        assert "above its high limit 630 °C" in past[1].Message.Text
        station = client.get_node(ua.NodeId("Plant.Lines.ac_line.Stations.coil", rig.ns))
        at_coil = await station.read_event_history(evtypes=kinds)
        assert at_coil
        assert {e.SourceName for e in at_coil} == {"coil"}
        assert ua.EventNotifier.HistoryRead in await client.nodes.server.read_event_notifier()
        assert await client.nodes.server.read_event_history(evtypes=[IDS.AuditEventType]) == []  # OfType
        details = ua.ReadEventDetails(
            StartTime=ua.get_win_epoch(), EndTime=ua.get_win_epoch(), NumValuesPerNode=1,
            Filter=await get_filter_from_event_type([client.get_node(ua.NodeId(IDS.AlarmConditionType))]),
        )  # fmt: skip
        first = await client.get_node(condition).history_read_events(details)
        assert len(first.HistoryData.Events) == 1
        assert first.ContinuationPoint
        rest = await client.uaclient.history_read(ua.HistoryReadParameters(
            HistoryReadDetails=details, ReleaseContinuationPoints=False,
            NodesToRead=[ua.HistoryReadValueId(NodeId=condition, ContinuationPoint=first.ContinuationPoint)],
        ))  # fmt: skip
        assert len(rest[0].HistoryData.Events) == 1
        assert not rest[0].ContinuationPoint
        telemetry = client.get_node(ua.NodeId("Plant.Lines.ac_line.Stations.coil.Telemetry", rig.ns))
        unsupported = await telemetry.history_read_events(details)
        assert unsupported.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported
        await rig.bridge.write_setpoint("coil", "furnace_setpoint_c", 605)


async def node_alarms(node: str, args: tuple[str, ...], on_waiting=None) -> tuple[int, list[dict[str, Any]]]:
    """Run tests/node/alarms.mjs; its JSON lines, calling `on_waiting` when it waits for normal."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "alarms.mjs"),
        *args,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(40):
            while line := await process.stdout.readline():
                if line.startswith(b"{"):
                    lines.append(json.loads(line))
                    if lines[-1] == {"waiting": True} and on_waiting is not None:
                        await on_waiting()
            await process.wait()
    except TimeoutError:
        raise AssertionError(f"node-opcua stalled after {lines}") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if any("refused" in line for line in lines):
        return process.returncode or 0, []
    return process.returncode or 0, [line for line in lines if "step" not in line]


@pytest.mark.interop
async def test_node_opcua_acknowledges_confirms_shelves_and_refreshes(ac_mapping, tmp_path, node_client):
    async with secured_rig(ac_mapping, tmp_path, allow_none_endpoint=True) as (rig, _, _):
        await rig.bridge.write_setpoint("coil", "furnace_setpoint_c", 650)
        pki = Pki(tmp_path / "pki")
        args = (rig.url, str(tmp_path / "node-pki"), "olga", "olga-pw", "otto", "otto-pw")
        first = await node_alarms(node_client[0], args)  # the server does not know its certificate yet
        assert first == (2, []), first
        (rejected,) = pki.certificates(pki.rejected)
        pki.move(rejected[0][:8], pki.rejected, pki.trusted)  # what `linebridge pki trust` does

        async def back_to_normal() -> None:
            await rig.bridge.write_setpoint("coil", "furnace_setpoint_c", 605)

        code, (answer, waiting, normal) = await node_alarms(node_client[0], args, back_to_normal)
        assert code == 0
        assert waiting == {"waiting": True}
        assert answer["condition"].endswith(f"s=Plant.Lines.ac_line.Stations.coil.Alarms.{FURNACE}")
        assert answer["type"] == "ns=0;i=9482"  # ExclusiveLevelAlarmType
        assert answer["severity"] == 700
        assert answer["observerAck"] == "BadUserAccessDenied"
        assert (answer["ack"], answer["ackedBy"], answer["ackComment"]) == ("Good", "olga", "node-opcua ack")
        assert answer["confirm"] == "Good"
        assert (answer["shelve"], answer["shelvedState"]) == ("Good", "TimedShelved")
        assert answer["unshelve"] == "Good"
        assert (answer["firstRefresh"], answer["refresh"]) == ("Good", "Good")
        refreshed = answer["refreshed"]
        assert (refreshed[0], refreshed[-1]) == ("ns=0;i=2787", "ns=0;i=2788")  # RefreshStart … End
        assert FURNACE in refreshed[1:-1]
        assert (normal["normal"], normal["retain"]) == (True, False)  # acknowledged and confirmed
        assert "back within its limits" in normal["message"]


async def test_a_plc_cut_off_at_the_network_raises_its_offline_alarm(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data", proxied=("charge",)) as rig:
        events, _ = await subscribe(rig.client)
        proxy = rig.proxies["charge"]
        await proxy.stop()  # the cable is pulled: connections reset, nothing answers on that port
        offline = await events.until(condition("offline", "charge", ActiveState__Id=True))
        assert offline.EventType == ua.NodeId(IDS.SystemOffNormalAlarmType)
        assert offline.ConditionClassId == ua.NodeId(IDS.SystemConditionClassType)
        assert (offline.Severity, offline.Retain) == (800, True)
        assert offline.Message.Text.startswith("charge: the PLC does not answer")
        rig.proxies["charge"] = FaultyLink(proxy.target, FaultMix(), port=proxy.port)
        await rig.proxies["charge"].start()  # plugged in again
        back = await events.until(condition("offline", "charge", ActiveState__Id=False))
        assert back.Retain is True  # nobody has acknowledged it yet
        assert field(back, "AckedState/Id") is False
        others = {e.SourceName for e in events.events if field(e, "ConditionName") == "offline"}
        assert others == {"charge"}  # only the station behind the pulled cable
