"""Finished orders beyond the newest few keep only their reference in the Orders folder and are
built again from the journal when a client asks: browsable and readable as ever, at a fraction
of the memory, and a restart builds none of them."""

from __future__ import annotations

import json

from asyncua import ua

from tests.integration.opcua_rig import opcua_rig
from tests.integration.orders import run_orders

ORDERS = "Plant.Lines.ac_line.Orders"


async def _browse_orders(rig) -> list[str]:
    """The names a Browse of the Orders folder returns (a browse reads no child's attributes)."""
    return sorted(ref.BrowseName.Name for ref in await rig.node(ORDERS).get_children_descriptions())


async def _completed_code(rig) -> int:
    enum = await rig.node(f"{ORDERS}.F-0.State").read_data_type()
    values = await rig.client.get_node(enum).get_child(["0:EnumValues"])
    return next(v.Value for v in await values.read_value() if v.DisplayName.Text == "completed")


async def test_older_finished_orders_are_built_again_when_read(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path, finished_in_full=2) as rig:
        orders = await run_orders(rig.bridge, "F", 4)
        assert rig.face.orders.compact == 2  # the two oldest: their reference only
        assert "Plant.Lines.ac_line.Orders.F-0.State" not in str(list(rig.face.server.iserver.aspace.keys()))
        assert await _browse_orders(rig) == ["F-0", "F-1", "F-2", "F-3"]  # all browsable
        completed = await _completed_code(rig)  # reading F-0 builds it
        assert rig.face.orders.compact == 1
        assert await rig.node(f"{ORDERS}.F-0.State").read_value() == completed
        step = orders[0].steps[-1]
        path = f"{ORDERS}.F-0.Steps.{step.unit_index}-{step.route_index}-{step.station}"
        assert json.loads(await rig.node(f"{path}.Results").read_value()) == step.results
        assert await rig.node(f"{path}.Sequence").read_value() == step.seq
        steps = await rig.node(f"{ORDERS}.F-1.Steps").get_children()  # browsing builds it too
        assert len(steps) == len(orders[1].steps)
        assert rig.face.orders.compact == 0


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
        handler = _Values()
        subscription = await rig.client.create_subscription(50, handler)
        await subscription.subscribe_data_change(rig.node(f"{ORDERS}.W-0.State"))
        await run_orders(rig.bridge, "V", 3)
        assert rig.face.orders.compact == 2  # V-0 and V-1 went: W-0 is watched, stays and blocks none
        assert await rig.node(f"{ORDERS}.W-0.State").read_data_value()
        assert ua.NodeId(f"{ORDERS}.W-0.State", rig.ns) in dict.keys(rig.face.server.iserver.aspace._nodes)
        await subscription.delete()


class _Values:
    def datachange_notification(self, node, value, data) -> None:
        pass
