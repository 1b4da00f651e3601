"""What a SCADA client does first: browse the whole line, read every variable in one request, page
through history, and call methods at the wrong moment. Each must answer with a value or the spec's
status for that node, never fail the whole request."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import Client, ua

from bridge.domain.model import OrderState
from tests.integration.opcua_rig import from_another_host, opcua_rig, s

HIERARCHICAL = ua.NodeId(ua.ObjectIds.HierarchicalReferences)


@pytest.fixture
async def rig(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        yield rig


async def until_state(rig, order_id: str, state: OrderState, timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while (order := rig.bridge.get(order_id)) is None or order.state != state:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.02)


async def every_variable(rig) -> list[ua.NodeId]:
    """Every variable under Plant, found with batched Browse requests (as a SCADA tag browser)."""
    found: list[ua.NodeId] = []
    frontier = [ua.NodeId("Plant", rig.ns)]
    seen = set(frontier)
    while frontier:
        batch, frontier = frontier[:200], frontier[200:]
        params = ua.BrowseParameters()
        for nodeid in batch:
            desc = ua.BrowseDescription()
            desc.NodeId = nodeid
            desc.BrowseDirection = ua.BrowseDirection.Forward
            desc.ReferenceTypeId = HIERARCHICAL
            desc.IncludeSubtypes = True
            desc.ResultMask = ua.BrowseResultMask.All
            params.NodesToBrowse.append(desc)
        for result in await rig.client.uaclient.browse(params):
            result.StatusCode.check()
            for ref in result.References:
                child = ref.NodeId
                if child.NamespaceIndex != rig.ns or child in seen:
                    continue
                seen.add(child)
                frontier.append(child)
                if ref.NodeClass == ua.NodeClass.Variable:
                    found.append(child)
    return found


async def read_all(rig, nodeids: list[ua.NodeId]) -> list[ua.DataValue]:
    params = ua.ReadParameters()
    for nodeid in nodeids:
        rv = ua.ReadValueId()
        rv.NodeId = nodeid
        rv.AttributeId = ua.AttributeIds.Value
        params.NodesToRead.append(rv)
    return await rig.client.uaclient.read(params)


async def test_every_variable_reads_in_one_request_in_every_order_state(rig):
    coil, chassis = rig.line["coil"], rig.line["chassis"]
    await rig.bridge.submit("DONE-1", "AC-W", {})
    await until_state(rig, "DONE-1", OrderState.COMPLETED)
    await coil.set_fault("reject_next", 7)
    await rig.bridge.submit("FAULT-1", "AC-W", {})
    await until_state(rig, "FAULT-1", OrderState.FAULTED)
    await chassis.set_fault("stall", 1)  # what follows stays running, queued or is cancelled
    await rig.bridge.submit("RUN-1", "AC-W", {})
    await until_state(rig, "RUN-1", OrderState.RUNNING)
    await rig.bridge.submit("QUEUED-1", "AC-W", {})
    await rig.bridge.submit("CANCEL-1", "AC-W", {})
    await rig.bridge.cancel("CANCEL-1")
    states = {o: rig.bridge.get(o).state for o in ("DONE-1", "FAULT-1", "RUN-1", "QUEUED-1", "CANCEL-1")}
    assert states["QUEUED-1"] == OrderState.QUEUED, states

    orders = rig.node("Plant.Lines.ac_line.Orders")
    async with asyncio.timeout(10):  # every order projected, the running one with an open step
        while len(await orders.get_children()) < 5:  # noqa: ASYNC110 - polls the server, bounded
            await asyncio.sleep(0.05)
    nodeids = await every_variable(rig)
    assert len(nodeids) > 300
    values = await read_all(rig, nodeids)
    assert len(values) == len(nodeids)
    failing = (ua.StatusCodes.BadInternalError, ua.StatusCodes.BadEncodingError)
    broken = [(n.Identifier, v.StatusCode.name) for n, v in zip(nodeids, values, strict=True)
              if v.StatusCode.value in failing]  # fmt: skip
    assert not broken

    by_id = {n.Identifier: v for n, v in zip(nodeids, values, strict=True)}
    completed = by_id["Plant.Lines.ac_line.Orders.RUN-1.CompletedAt"]
    assert completed.StatusCode.is_good()
    assert completed.Value.VariantType == ua.VariantType.DateTime
    assert completed.Value.Value <= datetime(1601, 1, 2, tzinfo=UTC)  # MinDateTime: "not yet"
    done = by_id["Plant.Lines.ac_line.Orders.DONE-1.CompletedAt"].Value.Value
    assert datetime.now(UTC) - done < timedelta(minutes=5)
    open_steps = [v for k, v in by_id.items() if str(k).startswith("Plant.Lines.ac_line.Orders.RUN-1.Steps.")
                  and str(k).endswith(".FinishedAt")]  # fmt: skip
    assert open_steps
    assert all(v.StatusCode.is_good() for v in open_steps)
    await chassis.set_fault("stall", 0)


async def test_cancel_of_a_finished_order_is_refused_with_bad_invalid_state(rig):
    await rig.bridge.submit("FIN-1", "AC-W", {})
    await until_state(rig, "FIN-1", OrderState.COMPLETED)
    result = await rig.call("CancelOrder", s("FIN-1"))
    assert result.StatusCode.value == ua.StatusCodes.BadInvalidState
    assert "already completed" in result.InputArgumentDiagnosticInfos[0].AdditionalInfo
    assert rig.bridge.get("FIN-1").state == OrderState.COMPLETED

    await rig.line["chassis"].set_fault("stall", 1)
    await rig.bridge.submit("CAN-1", "AC-W", {})
    assert (await rig.call("CancelOrder", s("CAN-1"))).StatusCode.is_good()
    again = await rig.call("CancelOrder", s("CAN-1"))
    assert again.StatusCode.is_good()  # cancelling a cancelled order: what was asked holds
    await rig.line["chassis"].set_fault("stall", 0)


async def history_of_press_force(rig, values: int):
    """The chassis press force node, once its history of the last 5 s holds `values` values (bounded),
    and that window (start, end)."""
    node = rig.node("Plant.Lines.ac_line.Stations.chassis.Telemetry.press_force_kn")
    start = datetime.now(UTC) - timedelta(seconds=5)
    async with asyncio.timeout(15):
        while len(await node.read_raw_history(start, datetime.now(UTC))) < values:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.1)
    return node, start, datetime.now(UTC)


async def history_page(client, nodeid, start, end, per_node, point=b""):
    details = ua.ReadRawModifiedDetails()
    details.IsReadModified = False
    details.StartTime, details.EndTime = start, end
    details.NumValuesPerNode = per_node
    details.ReturnBounds = False
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.ReleaseContinuationPoints = False
    read = ua.HistoryReadValueId()
    read.NodeId = nodeid
    read.ContinuationPoint = point
    params.NodesToRead.append(read)
    (result,) = await client.uaclient.history_read(params)
    return result


async def test_history_pages_with_continuation_points_and_refuses_nodes_without_history(rig):
    node, start, end = await history_of_press_force(rig, values=12)
    everything = await node.read_raw_history(start, end)
    pages, point = [], b""
    async with asyncio.timeout(15):
        while True:
            result = await history_page(rig.client, node.nodeid, start, end, 5, point)
            assert result.StatusCode.is_good(), result.StatusCode
            pages.append(result.HistoryData.DataValues)
            point = result.ContinuationPoint
            if not point:
                break
    assert all(len(p) == 5 for p in pages[:-1])
    paged = [v.SourceTimestamp for p in pages for v in p]
    assert paged == [v.SourceTimestamp for v in everything][: len(paged)]
    assert len(paged) >= len(everything)  # every value once, in order, nothing skipped

    first = await history_page(rig.client, node.nodeid, start, end, 5)
    assert first.ContinuationPoint
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = ua.ReadRawModifiedDetails(StartTime=start, EndTime=end, NumValuesPerNode=5)
    params.ReleaseContinuationPoints = True
    release = ua.HistoryReadValueId(NodeId=node.nodeid, ContinuationPoint=first.ContinuationPoint)
    params.NodesToRead.append(release)
    (released,) = await rig.client.uaclient.history_read(params)
    assert released.StatusCode.is_good()
    stale = await history_page(rig.client, node.nodeid, start, end, 5, first.ContinuationPoint)
    assert stale.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid

    plain = rig.node("Plant.Lines.ac_line.Stations.chassis.CurrentOrder")
    refused = await history_page(rig.client, plain.nodeid, start, end, 5)
    assert refused.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported


async def test_a_history_store_that_cannot_be_read_fails_its_nodes_not_the_whole_request(rig, monkeypatch):
    """One HistoryRead of two nodes whose store fails for one (an I/O error): that node is
    BadResourceUnavailable, the other is read as ever."""
    broken = rig.node("Plant.Lines.ac_line.Stations.chassis.Telemetry.press_force_kn")
    fine = rig.node("Plant.Lines.ac_line.Stations.coil.Telemetry.furnace_temp_c")
    start = datetime.now(UTC) - timedelta(seconds=5)
    async with asyncio.timeout(15):
        while not await fine.read_raw_history(start, datetime.now(UTC)):  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.1)
    store = rig.face.history
    failing_key, read_page = store.key(broken.nodeid.to_string()), store.read_page

    async def failing(key, *args):
        if key == failing_key:
            raise sqlite3.OperationalError("disk I/O error")
        return await read_page(key, *args)

    monkeypatch.setattr(store, "read_page", failing)  # our store, not asyncua
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = ua.ReadRawModifiedDetails(
        IsReadModified=False, StartTime=start, EndTime=datetime.now(UTC), NumValuesPerNode=100
    )
    params.TimestampsToReturn, params.ReleaseContinuationPoints = ua.TimestampsToReturn.Both, False
    params.NodesToRead = [ua.HistoryReadValueId(NodeId=n.nodeid) for n in (broken, fine)]
    first, second = await rig.client.uaclient.history_read(params)
    assert first.StatusCode.value == ua.StatusCodes.BadResourceUnavailable
    assert second.StatusCode.is_good()
    assert second.HistoryData.DataValues


async def test_one_client_opening_pages_drops_its_own_oldest_continuation_point_not_anothers(rig):
    """asyncua tells the history manager no session, and the server's 1,000 points were anyone's:
    a client opening page after page invalidated every other client's paging."""
    node, start, end = await history_of_press_force(rig, values=3)
    rig.face.server.iserver.history_manager.points_per_client = 3  # 100 by default
    async with from_another_host(rig.url) as url, Client(url, timeout=10) as other:
        theirs = await history_page(other, node.nodeid, start, end, 1)
        mine = [await history_page(rig.client, node.nodeid, start, end, 1) for _ in range(5)]
        assert all(page.ContinuationPoint for page in [theirs, *mine])
        going_on = await history_page(other, node.nodeid, start, end, 1,
                                      theirs.ContinuationPoint)  # fmt: skip
        assert going_on.StatusCode.is_good()
    dropped = await history_page(rig.client, node.nodeid, start, end, 1, mine[0].ContinuationPoint)
    assert dropped.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid
    kept = await history_page(rig.client, node.nodeid, start, end, 1, mine[-1].ContinuationPoint)
    assert kept.StatusCode.is_good()
