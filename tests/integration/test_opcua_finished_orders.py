"""An order is in the Orders folder by reference until a client asks for any of its nodes; then it
is built as it stands (from memory while it runs, else from the journal) and kept current. Built
finished orders beyond the newest few go back to their reference. Browsable and readable as ever,
at a fraction of the memory and of the face's work per step; a restart builds none of them."""

from __future__ import annotations

import asyncio
import json

from asyncua import ua

from tests.integration.opcua_rig import opcua_rig
from tests.integration.orders import run_orders, until

ORDERS = "Plant.Lines.ac_line.Orders"


async def _browse_orders(rig) -> list[str]:
    """The names a Browse of the Orders folder returns (a browse reads no child's attributes)."""
    return sorted(ref.BrowseName.Name for ref in await rig.node(ORDERS).get_children_descriptions())


async def _completed_code(rig, order_id: str = "F-0") -> int:
    enum = await rig.node(f"{ORDERS}.{order_id}.State").read_data_type()
    values = await rig.client.get_node(enum).get_child(["0:EnumValues"])
    return next(v.Value for v in await values.read_value() if v.DisplayName.Text == "completed")


async def test_an_order_nobody_looked_at_is_listed_and_built_when_read(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path, finished_in_full=2) as rig:
        orders = await run_orders(rig.bridge, "F", 4)
        await until(lambda: rig.face.orders.compact == 4, timeout_s=10, every_s=0.02)  # by reference only
        assert "Plant.Lines.ac_line.Orders.F-0.State" not in str(list(rig.face.server.iserver.aspace.keys()))
        assert await _browse_orders(rig) == ["F-0", "F-1", "F-2", "F-3"]  # all browsable
        completed = await _completed_code(rig)  # reading F-0 builds it
        assert rig.face.orders.compact == 3
        assert await rig.node(f"{ORDERS}.F-0.State").read_value() == completed
        step = orders[0].steps[-1]
        path = f"{ORDERS}.F-0.Steps.{step.unit_index}-{step.route_index}-{step.station}"
        assert json.loads(await rig.node(f"{path}.Results").read_value()) == step.results
        assert await rig.node(f"{path}.Sequence").read_value() == step.seq
        steps = await rig.node(f"{ORDERS}.F-1.Steps").get_children()  # browsing builds it too
        assert len(steps) == len(orders[1].steps)
        assert rig.face.orders.compact == 2


async def test_an_order_that_cannot_be_built_fails_its_nodes_not_the_whole_read(ac_mapping, tmp_path):
    """A SCADA client reads the line in one request: an order the bridge cannot build (its journal
    unreadable, say) is BadNodeIdUnknown for its own nodes; the other nodes are read as ever, and
    it is tried again at the next ask."""
    async with opcua_rig(ac_mapping, tmp_path, finished_in_full=0) as rig:
        await run_orders(rig.bridge, "B", 1)
        await until(lambda: rig.face.orders.compact == 1, timeout_s=10, every_s=0.02)
        load = rig.face.orders.load

        def unreadable(order_id):
            raise OSError("journal unreadable")

        rig.face.orders.load = unreadable
        state = rig.node(f"{ORDERS}.B-0.State")
        current = rig.node("Plant.Lines.ac_line.Stations.coil.CurrentOrder")
        values = await rig.client.read_attributes([state, current])
        assert values[0].StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
        assert values[1].StatusCode.is_good()
        rig.face.orders.load = load
        assert await state.read_value() == await _completed_code(rig, "B-0")


async def test_an_order_built_while_it_runs_is_kept_current(ac_mapping, tmp_path):
    """Read while it has work left, an order is built from the order in memory; the events that
    follow keep it current: its state, progress and every later step."""
    async with opcua_rig(ac_mapping, tmp_path) as rig:
        rig.line.plcs["pack"].cycle_time_s = 1.0  # the last station: L-0 runs for a second at least
        await rig.bridge.submit("L-0", "AC-W", {})
        await _listed(rig, "L-0")
        assert not rig.face.orders.built("L-0")
        assert await rig.node(f"{ORDERS}.L-0.Quantity").read_value() == 1  # builds it
        assert rig.face.orders.built("L-0")
        assert rig.bridge.engine.get_active("L-0") is not None  # built while it runs
        async with asyncio.timeout(30):
            await rig.bridge.wait_idle()
        order = rig.bridge.get("L-0")
        assert order is not None
        completed = await _completed_code(rig, "L-0")
        state = rig.node(f"{ORDERS}.L-0.State")
        async with asyncio.timeout(10):
            while await state.read_value() != completed:  # noqa: ASYNC110 - polls the server, bounded
                await asyncio.sleep(0.02)
        assert await rig.node(f"{ORDERS}.L-0.Progress").read_value() == order.units_done
        steps = await rig.node(f"{ORDERS}.L-0.Steps").get_children()
        assert len(steps) == len(order.steps)
        last = order.steps[-1]
        path = f"{ORDERS}.L-0.Steps.{last.unit_index}-{last.route_index}-{last.station}"
        assert json.loads(await rig.node(f"{path}.Results").read_value()) == last.results


async def _listed(rig, order_id: str) -> None:
    async with asyncio.timeout(10):
        while order_id not in await _browse_orders(rig):  # noqa: ASYNC110 - polls the server, bounded
            await asyncio.sleep(0.02)


async def test_a_restart_lists_finished_orders_by_reference_and_reads_them_from_the_journal(
    ac_mapping, tmp_path
):
    async with opcua_rig(ac_mapping, tmp_path) as rig:
        orders = await run_orders(rig.bridge, "R", 3)
    async with opcua_rig(ac_mapping, tmp_path) as rig:
        assert rig.face.orders.compact == 3  # none built at start
        assert await _browse_orders(rig) == ["R-0", "R-1", "R-2"]
        assert await rig.node(f"{ORDERS}.R-2.Quantity").read_value() == orders[2].quantity
        completed_at = await rig.node(f"{ORDERS}.R-2.CompletedAt").read_value()
        assert completed_at == orders[2].completed_at
        assert rig.face.orders.compact == 2


async def test_a_finished_order_a_client_watches_keeps_its_nodes(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path, finished_in_full=1) as rig:
        await run_orders(rig.bridge, "W", 1)
        await _listed(rig, "W-0")
        handler = _Values()
        subscription = await rig.client.create_subscription(50, handler)
        await subscription.subscribe_data_change(rig.node(f"{ORDERS}.W-0.State"))  # builds W-0
        await run_orders(rig.bridge, "V", 3)
        for i in range(3):
            await _listed(rig, f"V-{i}")
            await rig.node(f"{ORDERS}.V-{i}.State").read_value()  # builds V-i: four built, one kept in full
        await until(lambda: rig.face.orders.compact == 0, timeout_s=10, every_s=0.02)
        rig.line.plcs["pack"].cycle_time_s = 1.0  # X-0 is built while it runs: its end compacts
        await rig.bridge.submit("X-0", "AC-W", {})
        await _listed(rig, "X-0")
        await rig.node(f"{ORDERS}.X-0.State").read_value()
        # V-0..2 went: W-0 is watched, stays
        await until(lambda: rig.face.orders.compact == 3, timeout_s=10, every_s=0.02)
        assert await rig.node(f"{ORDERS}.W-0.State").read_data_value()
        nodes = dict.keys(rig.face.server.iserver.aspace._nodes)  # without building on demand
        assert ua.NodeId(f"{ORDERS}.W-0.State", rig.ns) in nodes
        assert ua.NodeId(f"{ORDERS}.V-0.State", rig.ns) not in nodes
        await subscription.delete()


class _Values:
    def datachange_notification(self, node, value, data) -> None:
        pass
