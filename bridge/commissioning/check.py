"""`linebridge plc check`: does a PLC program follow the handshake the bridge relies on?

Drives one station through the cases of docs/handshake.md with the bridge's own station link, so a
PLC that passes is driven the same way in production. It writes only registers the mapping declares
(parameters, the command block) and leaves the PLC idle. Each case runs real steps: on a machine,
run it in the PLC's commissioning or dry-run mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bridge.commissioning.cases import HandshakeCases
from bridge.commissioning.outcomes import NOT_IDLE, CaseFailed, CaseResult, CaseSkipped, describe
from bridge.domain.model import Order, Unit
from bridge.domain.orders import OrderRequest, validate_order
from bridge.domain.station_driver import order_values
from bridge.errors import CodecError, OrderRejected, ParameterMismatch, StationError
from bridge.handshake import PlcState, StatusBlock, next_seq
from bridge.mapping.derive import derive_parameters
from bridge.mapping.model import LineMapping
from bridge.modbus.link import ModbusStationLink

log = structlog.get_logger(__name__)


class HandshakeCheck(HandshakeCases):
    """Runs the cases (cases.py) in order on one station, beating its heartbeat throughout; holds
    the steps they are made of: start, wait for done, acknowledge, watch that nothing happens."""

    def __init__(
        self,
        mapping: LineMapping,
        station: str,
        *,
        options: dict[str, Any] | None = None,
        step_timeout_s: float | None = None,
        settle_s: float = 0.5,
        request_timeout_s: float = 1.0,
    ) -> None:
        self.mapping = mapping
        self.station = station
        self.kind = mapping.station_type(station)
        # long enough for the mapping's cycle time, twice over
        self.step_timeout_s = step_timeout_s or 2 * self.kind.cycle_time_s + 5
        self.settle_s = settle_s  # how long a PLC is watched to see that it does NOT do something
        # what a PLC does within a scan or two (take a start, take an acknowledge): seen this soon
        self.scan_timeout_s = max(2.0, 4 * settle_s)
        self.request_timeout_s = request_timeout_s
        self.parameters = self._parameters(options or {})
        self.link = self._new_link()
        self.seq = 0
        self._beating = asyncio.Event()
        self._log = log.bind(station=station)

    def _new_link(self) -> ModbusStationLink:
        return ModbusStationLink(
            self.mapping, self.station, timeout_s=self.request_timeout_s, beat_before_start=False
        )

    def _parameters(self, options: dict[str, Any]) -> dict[str, Any]:
        """The parameters an order with `options` (defaults for the rest) gives this station."""
        kind_name = self.mapping.stations[self.station].type
        for product_id, product in self.mapping.products.items():
            if kind_name in product.parameters or not self.kind.parameters:
                valid = validate_order(self.mapping, OrderRequest("PLC-CHECK", product_id, options))
                order = Order(valid.order_id, product_id, valid.options, 1)
                return derive_parameters(product, kind_name, order_values(order, Unit(valid.order_id, 0, 1)))
        raise OrderRejected(f"no product of the mapping derives parameters for station type {kind_name}")

    # -- running -----------------------------------------------------------------------------

    async def run(self, on_result: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
        cases: dict[str, Callable[[], Awaitable[str]]] = {
            "reachable": self._reachable,
            "normal_step": self._normal_step,
            "result_read_back": self._result_read_back,
            "repeated_start": self._repeated_start,
            "lost_acknowledge": self._lost_acknowledge,
            "rejected_parameters": self._rejected_parameters,
            "bridge_restart": self._bridge_restart,
            "heartbeat": self._heartbeat_lost,
        }
        self._beating.set()
        beating = asyncio.create_task(self._beat(), name="plc-check-heartbeat")
        results: list[CaseResult] = []
        stuck = ""  # why no further case can run: the PLC does not answer, or cannot be made idle
        try:
            for name, case in cases.items():
                if stuck:
                    result = CaseResult(name, "skipped", stuck)
                else:
                    result = await self._one(name, case)
                    if result.outcome == "failed" and (name == "reachable" or NOT_IDLE in result.detail):
                        stuck = f"not run: {name} left the PLC unusable for a further step"
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            await self.link.close()
        return results

    async def _beat(self) -> None:
        """The heartbeat a bridge writes, while `_beating` is set: a PLC that watches it (from an
        earlier bridge, say) would refuse every start of the check without it."""
        if self.kind.handshake.heartbeat is None:
            return
        link = self._new_link()
        try:
            while True:
                await self._beating.wait()
                with contextlib.suppress(StationError):
                    await link.beat()
                await asyncio.sleep(self.kind.handshake.heartbeat.period_s)
        finally:
            await link.close()

    async def _one(self, name: str, case: Callable[[], Awaitable[str]]) -> CaseResult:
        try:
            detail = await case()
        except CaseSkipped as exc:
            return CaseResult(name, "skipped", str(exc))
        except (CaseFailed, StationError, ParameterMismatch, CodecError, TimeoutError) as exc:
            result = CaseResult(name, "failed", str(exc) or type(exc).__name__)
        else:
            result = CaseResult(name, "passed", detail)
        self._log.info("plc_check_case", case=name, outcome=result.outcome, detail=result.detail)
        if name != "reachable":
            try:
                await self._leave_idle()
            except (CaseFailed, StationError, TimeoutError) as exc:
                detail = f"{result.detail}; and {NOT_IDLE}: {exc}"
                return CaseResult(name, "failed", detail)
        return result

    # -- helpers -----------------------------------------------------------------------------

    async def _until(
        self, predicate: Callable[[StatusBlock], bool], what: str, timeout_s: float | None = None
    ) -> StatusBlock:
        """Read the status until `predicate` holds; CaseFailed naming `what` and the last status."""
        limit = self.step_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while True:
            status = await self.link.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise CaseFailed(f"{what} not seen within {limit:g} s; the PLC shows {describe(status)}")
            await asyncio.sleep(0.01)

    async def _watch(self, what_not: Callable[[StatusBlock], str | None]) -> StatusBlock:
        """Watch the status for `settle_s`: CaseFailed the moment `what_not` names something the PLC
        must not do."""
        deadline = time.monotonic() + self.settle_s
        while True:
            status = await self.link.status()
            wrong = what_not(status)
            if wrong is not None:
                raise CaseFailed(f"{wrong}; the PLC shows {describe(status)}")
            if time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.02)

    async def _leave_idle(self) -> None:
        """Abort a running step and acknowledge a finished one, until the PLC is idle."""
        status = await self.link.status()
        if status.state == PlcState.BUSY:
            await self.link.abort(status.accepted_seq)
            status = await self._until(lambda s: s.state != PlcState.BUSY, "the end of an aborted step")
        if status.state == PlcState.DONE:
            done_seq = status.done_seq
            await self.link.acknowledge(done_seq)
            status = await self._until(
                lambda s: s.state == PlcState.IDLE, f"idle after ack_seq {done_seq}", self.scan_timeout_s
            )
        self.seq = max(self.seq, status.accepted_seq, status.done_seq)

    def _next(self) -> int:
        self.seq = next_seq(self.seq)
        return self.seq

    async def _start(self, parameters: dict[str, Any] | None = None) -> tuple[int, StatusBlock]:
        """Parameters written and read back, then start_seq: the step's number and the status before.
        A step the PLC finished since the last case (one it ran again by itself) is acknowledged first."""
        await self._leave_idle()
        before = await self.link.status()
        await self.link.write_parameters(self.parameters if parameters is None else parameters)
        seq = self._next()
        await self.link.start(seq)
        return seq, before

    async def _until_done(self, seq: int, before: StatusBlock) -> StatusBlock:
        status = await self._until(lambda s: s.done_seq == seq, f"done_seq {seq} after start_seq {seq}")
        if status.executed_count != before.executed_count + 1:
            raise CaseFailed(
                f"executed_count went from {before.executed_count} to {status.executed_count} for one start"
            )
        if status.reexecuted_count != before.reexecuted_count:
            raise CaseFailed(f"reexecuted_count rose to {status.reexecuted_count}: step {seq} ran twice")
        return status

    async def _taken(self, seq: int, before: StatusBlock) -> StatusBlock:
        """The status once the PLC shows it took start `seq`; fails as soon as it ran something else."""
        status = await self._until(
            lambda s: s.accepted_seq == seq or s.executed_count != before.executed_count,
            f"accepted_seq {seq} after start_seq {seq}",
            self.scan_timeout_s,
        )
        if status.accepted_seq != seq:
            raise CaseFailed(
                f"the PLC started a step (executed_count {before.executed_count} → {status.executed_count})"
                f" but does not echo it: accepted_seq {status.accepted_seq}, not {seq}"
            )
        return status

    async def _acknowledge(self, seq: int) -> StatusBlock:
        await self.link.acknowledge(seq)
        return await self._until(
            lambda s: s.state == PlcState.IDLE and s.acked_seq == seq,
            f"state idle with acked_seq {seq} after ack_seq {seq}",
            self.scan_timeout_s,
        )

    # -- the cases -----------------------------------------------------------------------------
