"""Routing and allocation, against in-memory PLCs the test holds and releases (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.domain.engine import EngineSettings, LineEngine
from bridge.domain.model import OrderState, UnitState
from bridge.domain.orders import OrderRequest
from bridge.handshake import PlcState, StatusBlock
from bridge.journal import SqliteJournal


class HeldPlc:
    """A StationLink whose steps finish when the test says so (or at once when not held)."""

    def __init__(self, station: str, *, held: bool = False) -> None:
        self.station = station
        self.held = held
        self.block = StatusBlock(PlcState.IDLE, 0, 0, 0, 0, 0, 0)
        self.parameters: dict[str, Any] = {}
        self.started: list[int] = []

    def _set(self, **changes: Any) -> None:
        self.block = StatusBlock(**{**self.block.__dict__, **changes})

    async def status(self) -> StatusBlock:
        await asyncio.sleep(0)
        return self.block

    async def write_parameters(self, parameters: dict[str, Any]) -> None:
        self.parameters = parameters

    async def start(self, seq: int) -> None:
        if self.block.ready and seq != self.block.accepted_seq:
            self.started.append(seq)
            self._set(state=PlcState.BUSY, accepted_seq=seq, executed_count=self.block.executed_count + 1)
            if not self.held:
                self.finish()

    def finish(self, code: int = 0) -> None:
        assert self.block.state == PlcState.BUSY
        self._set(state=PlcState.DONE, done_seq=self.block.accepted_seq, result_code=code)

    async def read_results(self) -> dict[str, Any]:
        return {}

    async def acknowledge(self, seq: int) -> None:
        if self.block.state == PlcState.DONE and seq == self.block.done_seq:
            self._set(state=PlcState.IDLE, acked_seq=seq)

    async def abort(self, seq: int) -> None:
        if self.block.state == PlcState.BUSY and seq == self.block.accepted_seq:
            self.finish(3)

    def retry_delay_s(self) -> float:
        return 0.01


@pytest.fixture
async def engine(ac_mapping, tmp_path):
    plcs = {name: HeldPlc(name) for name in ac_mapping.stations}
    journal = SqliteJournal(tmp_path / "journal.sqlite")
    engine = LineEngine(ac_mapping, journal, plcs, EngineSettings(status_poll_s=0.001))
    await engine.start()
    try:
        yield engine, plcs
    finally:
        await engine.stop()
        journal.close()


async def until(predicate, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polls in-memory state, bounded by the timeout
            await asyncio.sleep(0.001)


def busy(plc: HeldPlc) -> bool:
    return plc.block.state == PlcState.BUSY


async def test_units_are_pipelined_along_the_route(engine):
    engine, plcs = engine
    plcs["chassis"].held = plcs["coil"].held = True
    order = await engine.submit(OrderRequest("PIPE", "AC-W", {}, quantity=2))
    await until(lambda: busy(plcs["chassis"]))
    plcs["chassis"].finish()
    await until(lambda: busy(plcs["coil"]) and busy(plcs["chassis"]))
    unit0, unit1 = order.units
    assert (unit0.state, unit0.next_step) == (UnitState.AT_STATION, 1)  # at coil
    assert (unit1.state, unit1.next_step) == (UnitState.AT_STATION, 0)  # at chassis, at the same time
    plcs["chassis"].held = plcs["coil"].held = False
    plcs["chassis"].finish()
    plcs["coil"].finish()
    await until(lambda: order.state == OrderState.COMPLETED)


async def test_parallel_benches_take_whichever_is_free(engine):
    engine, plcs = engine
    plcs["test_a"].held = plcs["test_b"].held = True
    order = await engine.submit(OrderRequest("PAR", "AC-W", {}, quantity=3))
    await until(lambda: busy(plcs["test_a"]) and busy(plcs["test_b"]))
    third = order.units[2]
    await until(lambda: third.next_step == 5 and third.state == UnitState.WAITING)  # both benches busy
    plcs["test_b"].finish()
    await until(lambda: len(plcs["test_b"].started) == 2)  # the free bench takes the waiting unit
    assert len(plcs["test_a"].started) == 1
    plcs["test_a"].held = plcs["test_b"].held = False
    plcs["test_a"].finish()
    plcs["test_b"].finish()
    await until(lambda: order.state == OrderState.COMPLETED)


async def test_first_in_first_out_unless_a_priority_says_otherwise(engine):
    engine, plcs = engine
    plcs["chassis"].held = True
    await engine.submit(OrderRequest("O1", "AC-W", {}))
    await until(lambda: busy(plcs["chassis"]))
    for order_id, priority in (("O2", 0), ("O3", 0), ("O4", 5)):
        await engine.submit(OrderRequest(order_id, "AC-W", {}, priority=priority))
    plcs["chassis"].held = False
    plcs["chassis"].finish()
    await until(lambda: all(engine.get(o).state == OrderState.COMPLETED for o in ("O1", "O2", "O3", "O4")))
    order_of_start = sorted(("O1", "O2", "O3", "O4"), key=lambda o: engine.get(o).steps[0].seq)
    assert order_of_start == ["O1", "O4", "O2", "O3"]


async def test_a_fault_stops_the_orders_other_units(engine):
    engine, plcs = engine
    plcs["coil"].held = True
    order = await engine.submit(OrderRequest("F", "AC-W", {}, quantity=3))
    await until(lambda: busy(plcs["coil"]))
    plcs["coil"].finish(code=2)
    await until(lambda: order.state == OrderState.FAULTED and engine.open_orders == 0)
    assert (order.fault_station, order.result_code) == ("coil", 2)
    assert order.units[0].state == UnitState.FAULTED
    assert all(u.state != UnitState.DONE for u in order.units)
    assert len(plcs["coil"].started) == 1
