"""The engine's ISA-95 job commands against the simulated line on loopback: a stored order waits
out of dispatch (and stays stored across a restart), a start releases it, a paused order's next
steps wait while its step in progress finishes, a stop ends it after the units in progress, an
abort faults what has not finished, an update replaces a job not begun, a clear takes an ended job
off the list. docs/isa95.md "What each method does on this line"."""

from __future__ import annotations

import pytest

from bridge.domain.model import OrderState, UnitState
from bridge.domain.orders import OrderRequest
from bridge.errors import OrderRejected, UnknownOrder, WrongOrderState
from bridge.handshake import PlcState, ResultCode
from tests.integration.test_engine import line, start_bridge, until_idle, until_state  # noqa: F401 - fixtures


def job(order_id: str, quantity: int | None = None, **options) -> OrderRequest:
    return OrderRequest(order_id, "AC-W", options, quantity, 0)


async def at_stalled_chassis(line, start_bridge, order_id: str, quantity: int = 1):  # noqa: F811
    """A bridge whose order `order_id` has its first unit at the chassis station, held busy there
    until the test sets the chassis' stall back to 0."""
    chassis = line["chassis"]
    await chassis.set_fault("stall", 1)
    bridge = await start_bridge()
    await bridge.submit(order_id, "AC-W", {}, quantity=quantity)
    await chassis.wait_for(lambda p: p.status.state == PlcState.BUSY)
    return bridge, chassis


async def test_a_stored_order_waits_across_a_restart_until_started(line, start_bridge):  # noqa: F811
    bridge = await start_bridge()
    stored = await bridge.engine.store_order(job("S1", capacity_btu=18000))
    assert stored.state == OrderState.STORED
    with pytest.raises(OrderRejected, match="order_id: an order with this id exists"):
        await bridge.engine.store_order(job("S1"))
    await bridge.submit("AFTER", "AC-W", {})
    await until_state(bridge, "AFTER", lambda o: o.state == OrderState.COMPLETED)
    assert bridge.get("S1").state == OrderState.STORED
    assert bridge.get("S1").steps == []

    await bridge.stop()
    bridge = await start_bridge()
    assert bridge.get("S1").state == OrderState.STORED
    with pytest.raises(WrongOrderState, match="order_id: order 'S1' is stored: pause applies to running"):
        await bridge.engine.pause_order("S1")
    await bridge.engine.start_order("S1")
    await until_idle(bridge)
    assert bridge.get("S1").state == OrderState.COMPLETED
    with pytest.raises(WrongOrderState, match="is completed: start applies to stored"):
        await bridge.engine.start_order("S1")
    with pytest.raises(UnknownOrder):
        await bridge.engine.start_order("NOPE")


async def test_revoke_start_before_a_unit_begins(line, start_bridge):  # noqa: F811
    bridge, chassis = await at_stalled_chassis(line, start_bridge, "FIRST")
    await bridge.engine.store_order(job("LATER"))
    await bridge.engine.start_order("LATER")
    assert (await bridge.engine.revoke_start("LATER")).state == OrderState.STORED
    with pytest.raises(WrongOrderState, match="is running: revoke start applies to queued"):
        await bridge.engine.revoke_start("FIRST")
    await chassis.set_fault("stall", 0)
    await until_state(bridge, "FIRST", lambda o: o.state == OrderState.COMPLETED)
    assert bridge.get("LATER").steps == []
    assert bridge.get("LATER").state == OrderState.STORED


async def test_pause_lets_the_step_in_progress_finish_and_holds_the_next(line, start_bridge):  # noqa: F811
    bridge, chassis = await at_stalled_chassis(line, start_bridge, "P")
    assert (await bridge.engine.pause_order("P")).state == OrderState.PAUSED
    await chassis.set_fault("stall", 0)
    paused = await until_state(bridge, "P", lambda o: o.units[0].next_step == 1)
    assert paused.units[0].state == UnitState.WAITING
    assert paused.state == OrderState.PAUSED
    assert sum(line["coil"].executed.values()) == 0  # held
    await bridge.engine.resume_order("P")
    await until_idle(bridge)
    assert bridge.get("P").state == OrderState.COMPLETED


async def test_stop_ends_the_order_after_the_units_in_progress(line, start_bridge):  # noqa: F811
    bridge, chassis = await at_stalled_chassis(line, start_bridge, "STOP", 3)
    await bridge.engine.stop_order("STOP")
    await chassis.set_fault("stall", 0)
    await until_idle(bridge)
    order = bridge.get("STOP")
    assert order.state == OrderState.COMPLETED
    assert [u.state for u in order.units] == [UnitState.DONE, UnitState.CANCELLED, UnitState.CANCELLED]
    assert sum(line["pack"].executed.values()) == 1


async def test_abort_faults_what_has_not_finished_and_aborts_the_plc_step(line, start_bridge):  # noqa: F811
    bridge, _ = await at_stalled_chassis(line, start_bridge, "AB", 2)
    aborted = await bridge.engine.abort_order("AB")
    assert (aborted.state, aborted.result_code) == (OrderState.FAULTED, ResultCode.ABORTED)
    await until_idle(bridge)
    order = bridge.get("AB")
    assert [(s.station, s.result_code) for s in order.steps] == [("chassis", ResultCode.ABORTED)]
    assert sum(line["coil"].executed.values()) == 0
    with pytest.raises(WrongOrderState, match="is faulted: abort applies to"):
        await bridge.engine.abort_order("AB")


async def test_update_replaces_a_job_not_begun_and_clear_takes_an_ended_one_off(line, start_bridge):  # noqa: F811
    bridge = await start_bridge()
    first = {u.serial for u in (await bridge.engine.store_order(job("U", capacity_btu=9000))).units}
    with pytest.raises(OrderRejected, match=r"options\.capacity_btu"):
        await bridge.engine.update_order(job("U", capacity_btu=9001))
    updated = await bridge.engine.update_order(job("U", quantity=2, capacity_btu=24000))
    assert (updated.quantity, updated.options["capacity_btu"], len(updated.units)) == (2, 24000, 2)
    assert {u.serial for u in updated.units}.isdisjoint(first)
    with pytest.raises(WrongOrderState, match="is stored: clear applies to an ended order"):
        await bridge.engine.clear_order("U")
    await bridge.engine.start_order("U")
    await until_idle(bridge)
    order = bridge.get("U")
    assert order.state == OrderState.COMPLETED
    assert order.units_done == 2
    assert sum(line["pack"].executed.values()) == 2
    assert not bridge.journal.is_cleared("U")
    await bridge.engine.clear_order("U")
    assert bridge.journal.is_cleared("U")
    with pytest.raises(WrongOrderState, match="is completed: update applies to"):
        await bridge.engine.update_order(job("U"))
