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
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pymodbus.client import AsyncModbusTcpClient

from bridge.domain.model import Order, Unit
from bridge.domain.orders import OrderRequest, validate_order
from bridge.domain.station_driver import order_values
from bridge.errors import CodecError, OrderRejected, ParameterMismatch, StationError
from bridge.handshake import PlcState, ResultCode, StatusBlock, next_seq
from bridge.mapping import codec
from bridge.mapping.derive import derive_parameters
from bridge.mapping.fields import RegisterField
from bridge.mapping.model import LineMapping
from bridge.mapping.vocabulary import BIT_TABLES
from bridge.modbus.link import ModbusStationLink

log = structlog.get_logger(__name__)

CASES = (
    "reachable",
    "normal_step",
    "result_read_back",
    "repeated_start",
    "lost_acknowledge",
    "rejected_parameters",
    "bridge_restart",
    "heartbeat",
)


NOT_IDLE = "the PLC could not be brought back to idle"


@dataclass(frozen=True)
class CaseResult:
    case: str
    outcome: Literal["passed", "failed", "skipped"]
    detail: str


class CaseFailed(Exception):
    """What the PLC did that the handshake does not allow, in words for the report."""


def describe(status: StatusBlock) -> str:
    return (
        f"state {status.state.name.lower()}, accepted_seq {status.accepted_seq}, done_seq {status.done_seq},"
        f" acked_seq {status.acked_seq}, result_code {status.result_code},"
        f" executed_count {status.executed_count}, reexecuted_count {status.reexecuted_count}"
    )


class HandshakeCheck:
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
        except _Skip as exc:
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

    async def _reachable(self) -> str:
        status = await self.link.status()
        first = describe(status)
        await self._leave_idle()
        return f"status block answers ({first}); idle"

    async def _normal_step(self) -> str:
        seq, before = await self._start()
        began = time.monotonic()
        seen = await self._taken(seq, before)
        if seen.state == PlcState.IDLE and seen.done_seq != seq:
            raise CaseFailed(f"accepted_seq {seq} shown while idle: a taken start shows busy (or done)")
        done = await self._until_done(seq, before)
        took = time.monotonic() - began
        if done.result_code != ResultCode.OK:
            raise CaseFailed(f"step {seq} with valid parameters ended with result_code {done.result_code}")
        results = await self.link.read_results()
        await self._acknowledge(seq)
        shown = ", ".join(f"{k}={_shown(v)}" for k, v in results.items()) or "none"
        return f"step {seq}: accepted, done with result 0 in {took:.2f} s, results {shown}, acknowledged"

    async def _result_read_back(self) -> str:
        if not self.kind.results:
            raise _Skip("the station type has no results")
        seq, before = await self._start()
        await self._until_done(seq, before)
        at_done = await self.link.read_results()
        await asyncio.sleep(self.settle_s)
        await self.link.status()
        later = await self.link.read_results()
        if later != at_done:
            raise CaseFailed(
                f"results changed after done_seq showed {seq}: {at_done} at done, {later} {self.settle_s:g} s"
                " later; the PLC must write results before it shows done"
            )
        await self._acknowledge(seq)
        after_ack = await self.link.read_results()
        if after_ack != at_done:
            raise CaseFailed(
                f"results changed with the acknowledge: {at_done} before, {after_ack} after; they must"
                " stay until the next start"
            )
        return f"step {seq}: results read at done, {self.settle_s:g} s later and after the acknowledge agree"

    async def _repeated_start(self) -> str:
        seq, before = await self._start()
        await self._until_done(seq, before)
        idle = await self._acknowledge(seq)
        await self.link.start(seq)  # as a retried request or a restarting bridge writes it again

        def ran_again(s: StatusBlock) -> str | None:
            if s.executed_count != idle.executed_count or s.reexecuted_count != idle.reexecuted_count:
                return f"start_seq {seq} written again ran step {seq} again"
            if s.state != PlcState.IDLE:
                return f"start_seq {seq} written again left the PLC {s.state.name.lower()}"
            return None

        await self._watch(ran_again)
        return f"start_seq {seq} written again after its step: ignored for {self.settle_s:g} s"

    async def _lost_acknowledge(self) -> str:
        seq, before = await self._start()
        done = await self._until_done(seq, before)

        def left_done(s: StatusBlock) -> str | None:
            if s.state != PlcState.DONE or s.done_seq != seq:
                return f"without ack_seq {seq} the PLC left done"
            return None

        await self._watch(left_done)
        following = self._next()
        await self.link.write_parameters(self.parameters)
        await self.link.start(following)

        def took_early(s: StatusBlock) -> str | None:
            if s.accepted_seq == following or s.executed_count != done.executed_count:
                return (
                    f"start_seq {following} written while step {seq} waited for its ack_seq was taken at once"
                )
            return left_done(s)

        await self._watch(took_early)
        await self.link.acknowledge(seq)
        await self.link.acknowledge(seq)  # a retried acknowledge is harmless
        await self._until_done(following, done)
        await self._acknowledge(following)
        return (
            f"step {seq} stayed done without its ack_seq for {self.settle_s:g} s; start_seq {following}"
            " written meanwhile waited, then ran once after the acknowledge (written twice)"
        )

    async def _rejected_parameters(self) -> str:
        found = self._out_of_range()
        if found is None:
            raise _Skip("no parameter has a min or max the PLC could be tested against")
        name, f, value = found
        await self.link.write_parameters(self.parameters)
        await self._write_raw(f, value)
        seq = self._next()
        before = await self.link.status()
        await self.link.start(seq)
        done = await self._until_done(seq, before)
        if done.result_code == ResultCode.OK:
            raise CaseFailed(
                f"step {seq} ran with {name} = {value:g} (range {_range(f)}) and result_code 0; the PLC"
                " must check the parameter set and refuse it (result_code 1, parameters_rejected)"
            )
        await self._acknowledge(seq)
        await self.link.write_parameters(self.parameters)  # leave valid values in place
        note = "" if done.result_code == ResultCode.PARAMETERS_REJECTED else " (1 is the usual code)"
        return f"{name} = {value:g} (range {_range(f)}) refused with result_code {done.result_code}{note}"

    async def _bridge_restart(self) -> str:
        seq, before = await self._start()
        await self._taken(seq, before)
        await self.link.close()  # the bridge goes away mid-step: its connection closes
        self.link = self._new_link()
        seen = await self.link.status()
        if seq not in (seen.accepted_seq, seen.done_seq):
            raise CaseFailed(
                f"after the bridge's connection closed the PLC no longer shows step {seq}"
                f" ({describe(seen)}): it must keep its handshake state when a client goes away"
            )
        await self.link.start(seq)  # a bridge back on a lost journal writes its start again
        try:
            await self._until_done(seq, before)
        except CaseFailed as exc:  # e.g. it forgot the step and, its start still there, ran it again
            raise CaseFailed(f"after the bridge's connection closed: {exc}") from None
        await self._acknowledge(seq)
        phase = "running" if seen.done_seq != seq else "done"
        return (
            f"step {seq} was still {phase} on a new connection; its start written again did not run it"
            " twice; acknowledged"
        )

    async def _heartbeat_lost(self) -> str:
        beat = self.kind.handshake.heartbeat
        if beat is None:
            raise _Skip("the mapping declares no heartbeat for this station type")
        self._beating.clear()
        try:
            await asyncio.sleep(beat.lost_after_s + 2 * beat.period_s)
            seq, before = await self._start()
            taken = await self._until(
                lambda s: s.done_seq == seq or s.executed_count != before.executed_count,
                f"an answer to start_seq {seq} with the heartbeat stopped for {beat.lost_after_s:g} s",
                self.scan_timeout_s,
            )
        except CaseFailed as exc:
            why = "a PLC refuses the start at once (result_code 5), it does not hold it"
            raise CaseFailed(f"{exc}: {why}") from None
        finally:
            self._beating.set()
        done = await self._until_done(seq, before) if taken.done_seq != seq else taken
        if done.result_code != ResultCode.BRIDGE_LOST:
            raise CaseFailed(
                f"step {seq} was started with the heartbeat (holding {beat.address}) unchanged for"
                f" {beat.lost_after_s:g} s and ended with result_code {done.result_code}; the PLC must refuse"
                " it with result_code 5 (bridge_lost)"
            )
        await asyncio.sleep(2 * beat.period_s)  # the heartbeat moves again
        await self._acknowledge(seq)
        again, before = await self._start()
        after = await self._until_done(again, before)
        await self._acknowledge(again)
        if after.result_code != ResultCode.OK:
            raise CaseFailed(
                f"with the heartbeat back, step {again} ended with result_code {after.result_code}"
            )
        return (
            f"heartbeat stopped {beat.lost_after_s + 2 * beat.period_s:g} s: start_seq {seq} refused with"
            f" result_code 5; heartbeat back: step {again} ran with result 0"
        )

    # -- an out-of-range parameter -----------------------------------------------------------------

    def _out_of_range(self) -> tuple[str, RegisterField, float] | None:
        fields = self.mapping.resolved_fields(self.station)
        for name in self.kind.parameters:
            f = fields[name]
            if not f.is_numeric or f.table in BIT_TABLES:
                continue
            step = max(f.scale, 1.0)
            for value in (
                f.max + step if f.max is not None else None,
                f.min - step if f.min is not None else None,
            ):
                if value is None:
                    continue
                try:
                    codec.encode(f.model_copy(update={"min": None, "max": None}), value)
                except CodecError:
                    continue
                return name, f, value
        return None

    async def _write_raw(self, f: RegisterField, value: float) -> None:
        """Write `value` past the mapping's range into `f`'s registers, which the link would refuse."""
        words = codec.encode(f.model_copy(update={"min": None, "max": None}), value)
        ep = self.mapping.stations[self.station].endpoint
        client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=self.request_timeout_s, retries=1)
        try:
            if not await client.connect():
                raise StationError(f"cannot connect to {ep.host}:{ep.port}", station=self.station)
            reply = await client.write_registers(f.address, words, device_id=ep.device_id)
            if reply.isError():
                raise CaseFailed(f"writing {words} to holding {f.address} was refused: {reply}")
        finally:
            client.close()


class _Skip(Exception):
    """The case does not apply to this station type."""


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _range(f: RegisterField) -> str:
    return f"{'' if f.min is None else f'{f.min:g}'} .. {'' if f.max is None else f'{f.max:g}'}".strip()
