"""The station side of the engine: one worker per station takes units from the dispatch list and
drives each step through the PLC handshake (docs/handshake.md), deciding only from the status the
PLC shows. The watch that faults units waiting on stations that stay away is absence.py.

A mixin of LineEngine, kept apart so engine.py reads as admission, dispatch and the journal. The
names declared on the class are the engine's that the driver uses; every decision still journals
before the PLC action it records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from bridge.domain.dispatch import DispatchList
from bridge.domain.model import Order, OrderEvent, OrderState, Step, StepPhase, Unit, UnitState, utcnow
from bridge.domain.ports import OrderJournal, StationLink
from bridge.errors import CodecError, DecisionRequired, ParameterMismatch, StationError
from bridge.handshake import HandshakeWatch, PlcState, ResultCode, StatusBlock, next_seq
from bridge.handshake import StepPhase as PlcPhase
from bridge.lifecycle import raise_if_cancelled
from bridge.mapping.derive import derive_parameters
from bridge.mapping.model import LineMapping

log = structlog.get_logger(__name__)


class StationDriver:
    """The station workers, mixed into LineEngine; the names declared here are the engine's."""

    mapping: LineMapping
    journal: OrderJournal
    links: dict[str, StationLink]
    settings: Any  # EngineSettings
    station_errors: dict[str, str]
    absent_since: dict[str, datetime]
    station_steps: dict[str, Step | None]
    _waiting: DispatchList
    _resume: dict[str, list[tuple[Order, Unit, Step]]]
    _in_flight: dict[str, tuple[Order, Unit, Step]]
    _seq: dict[str, int]
    _acked: dict[str, int]
    _watch: dict[str, HandshakeWatch]
    _lost_steps: set[str]
    _decisions: dict[str, str]
    _until: Callable[[Callable[[], bool]], Any]
    _take: Callable[[str], Any]
    _tell: Callable[[Order, Step], None]
    _notify: Callable[[], None]
    _close: Callable[..., Any]
    _journaled: Callable[..., Any]
    _event: Callable[..., OrderEvent]
    _emit: Callable[[Order, OrderEvent], None]

    # -- one station ------------------------------------------------------------------------

    async def _station_worker(self, station: str) -> None:
        """Supervised: a worker that failed is started again and first takes up the step it had."""
        link = self.links[station]
        interrupted = self._in_flight.pop(station, None)
        if interrupted is not None:
            log.warning("step_taken_up_again", order_id=interrupted[0].order_id, station=station)
            self._resume[station].insert(0, interrupted)
        ended: tuple[StatusBlock, float] | None = None  # the status the last step here ended on
        while True:
            raise_if_cancelled()
            seen: tuple[StatusBlock, float] | None = None  # the status read just before the step began
            if self._resume[station]:
                order, unit, step = self._resume[station].pop(0)
            else:
                # The PLC answered a moment ago: no request to prove it is there.
                fresh = ended is not None and time.monotonic() - ended[1] <= self.settings.status_reuse_s
                if fresh and station in self._seq and station not in self.station_errors:
                    seen = ended
                else:
                    seen = await self._until_reachable(station, link)
                if station in self.station_errors:
                    await self._until_cleared(station)
                    continue
                if self._waiting.best(station) is None:  # by the time a unit comes, another master may have
                    seen = None  # started a step: what was read before the wait is no proof
                order, unit = await self._take(station)
                step = await self._begin(order, unit, station)
            self.station_steps[station] = step
            self._in_flight[station] = (order, unit, step)
            self._tell(order, step)
            with structlog.contextvars.bound_contextvars(
                order_id=order.order_id, station=station, unit=unit.index, seq=step.seq
            ):
                ended = await self._drive(order, unit, step, link, seen)
            del self._in_flight[station]
            self.station_steps[station] = None
            self._tell(order, step)

    async def _until_reachable(self, station: str, link: StationLink) -> tuple[StatusBlock, float]:
        """Wait until the PLC answers (so no unit is held by a dead station) and know its seq; the
        status it answered and when (time.monotonic()): the step that follows may start from it."""
        while True:
            raise_if_cancelled()
            try:
                status = await link.status()
            except StationError:
                raise_if_cancelled()
                self.absent_since.setdefault(station, utcnow())
                await asyncio.sleep(link.retry_delay_s())
                continue
            self.absent_since.pop(station, None)
            self._watched(station, status)
            if station not in self._seq:
                last = self.journal.last_seq(station)
                self._seq[station] = status.accepted_seq if last is None else last
                while next_seq(self._seq[station]) in (status.accepted_seq, status.done_seq):
                    self._seq[station] = next_seq(self._seq[station])
            return status, time.monotonic()

    def _watched(self, station: str, status: StatusBlock) -> str | None:
        """Hold the station if `status` shows work the bridge did not order; returns the reason."""
        problem = self._watch[station].check(status)
        if problem is not None and station not in self.station_errors:
            self.station_errors[station] = problem
            log.error("station_handshake_violation", station=station, reason=problem)
        return problem

    async def _until_cleared(self, station: str) -> None:
        await self._until(lambda: station not in self.station_errors)

    async def _hold_for_restart(self, order: Order, unit: Unit, step: Step, why: str) -> str:
        """Hold the station until an engineer decides about the step its PLC lost; the decision."""
        station = step.station
        reason = (
            f"PLC restarted while step {step.seq} (order {order.order_id}, unit {unit.index}) ran there"
            f" ({why}): it may have run partly. Decide: `linebridge station clear {station} --rerun` runs"
            f" it again, `--fail` faults the unit"
        )
        self.station_errors[station] = reason
        self._lost_steps.add(station)
        log.error("station_restarted_mid_step", reason=reason)
        self._notify()
        await self._until(lambda: station not in self.station_errors)
        decision = self._decisions.pop(station, "rerun")
        log.warning("restarted_step_decided", decision=decision)
        return decision

    def clear_station_error(self, station: str, decision: str | None = None) -> str | None:
        """Let a held station work again (its next status is taken as it is); returns the reason
        it was held, or None if it was not. A station whose PLC lost a step needs `decision`:
        "rerun" (start the step again) or "fail" (fault the unit); DecisionRequired without it."""
        if station in self._lost_steps:
            if decision not in ("rerun", "fail"):
                raise DecisionRequired(
                    f"station {station}'s PLC restarted mid-step: say whether to run the step again"
                    " (rerun) or to fault the unit (fail)"
                )
            self._lost_steps.discard(station)
            self._decisions[station] = decision
        reason = self.station_errors.pop(station, None)
        if reason is not None:
            self._watch[station].reset()
            log.warning("station_error_cleared", station=station, reason=reason)
            self._notify()
        return reason

    async def _begin(self, order: Order, unit: Unit, station: str) -> Step:
        self._seq[station] = next_seq(self._seq[station])
        kind = self.mapping.stations[station].type
        parameters = unit.parameters.get(kind)
        if parameters is None:  # a unit journaled before parameters were kept with it
            parameters = derive_parameters(
                self.mapping.products[order.product], kind, order_values(order, unit)
            )
        step = Step(
            order.order_id, unit.index, unit.next_step, station, self._seq[station], parameters, utcnow()
        )
        unit.state = UnitState.AT_STATION
        if order.state == OrderState.QUEUED:
            order.move_to(OrderState.RUNNING)
        order.current_station = station
        order.steps.append(step)
        event = self._event(
            order, station=station, unit=unit.index, message=f"unit {unit.index} at {station}"
        )
        step.id = await self._journaled(self.journal.begin_step_rows, order, unit, step, event)
        self._emit(order, event)
        return step

    async def _drive(
        self, order: Order, unit: Unit, step: Step, link: StationLink, seen: tuple[StatusBlock, float] | None
    ) -> tuple[StatusBlock, float] | None:
        """Take step `step` from wherever it stands to closed, deciding only from the PLC status.

        `seen`: a status read just before the step began (or the one the station's last step ended
        on); taken as the first if it is no older than `status_reuse_s`, else read again.
        Returns the status the step ended on, with when it was read, if it ended acknowledged."""
        abort_sent = timed_out = False
        on_plc = start_sent = False  # the PLC has shown this step / the start has been written
        began = time.monotonic()
        poll = running_poll = self.settings.status_poll_s
        last_error = ""
        while True:
            raise_if_cancelled()  # a cancel swallowed inside the Modbus library must still stop us
            try:
                # Our own acknowledge, written after this status was read: the PLC takes it before a
                # start (docs/handshake.md), so the station counts as ready. Read afresh, "done" is
                # a lost or not yet taken acknowledge, written again.
                acked_after = False
                if seen is not None and time.monotonic() - seen[1] <= self.settings.status_reuse_s:
                    status, read_at = seen
                    ours = self._acked.get(step.station)
                    acked_after = status.state == PlcState.DONE and ours == status.done_seq
                else:
                    status = await link.status()
                    read_at = time.monotonic()
                seen = None
                self.absent_since.pop(step.station, None)
                problem = self._watched(step.station, status)
                if problem is not None:  # nothing the PLC shows now is this step's doing
                    if step.phase != StepPhase.FINISHED:
                        await self._finish(step, {}, ResultCode.HANDSHAKE_VIOLATION)
                    await self._close(order, unit, step, message=f"station {step.station}: {problem}")
                    return None
                fell_back, self._watch[step.station].fell_back = self._watch[step.station].fell_back, None
                phase = status.phase_of(step.seq)
                if not on_plc and phase != PlcPhase.NOT_STARTED:
                    on_plc = True
                    log.debug("step_seen_on_plc", phase=phase.value, at_station=step.station)
                if step.phase == StepPhase.BEGUN and phase == PlcPhase.NOT_STARTED and (
                    on_plc or (start_sent and fell_back)
                ):  # the PLC lost a step it had: it may have run partly, and must not run again unasked
                    why = fell_back or f"its status no longer shows step {step.seq}"
                    if await self._hold_for_restart(order, unit, step, why) == "fail":
                        await self._finish(step, {}, ResultCode.PLC_RESTARTED)
                        await self._close(order, unit, step, message="the PLC restarted mid-step: faulted")
                        return None
                    on_plc = start_sent = False
                    continue
                if step.phase == StepPhase.FINISHED:  # result journaled: only the acknowledge is left
                    if phase == PlcPhase.FINISHED:
                        await self._acknowledge(link, step.station, step.seq)
                    await self._close(order, unit, step)
                    return (status, read_at) if phase == PlcPhase.FINISHED else None
                if phase == PlcPhase.NOT_STARTED:
                    if order.state.is_final:
                        await self._finish(step, {}, ResultCode.ABORTED)
                        await self._close(order, unit, step)
                        return None
                    if status.state == PlcState.DONE and not acked_after:
                        if status.done_seq != self._acked.get(step.station):  # a result nobody will collect
                            log.warning("stale_result_acknowledged", stale_seq=status.done_seq)
                        await self._acknowledge(link, step.station, status.done_seq)  # twice is harmless
                        continue
                    if not (status.ready or acked_after):
                        await asyncio.sleep(poll)
                        continue
                    try:
                        await link.write_parameters(step.parameters)
                    except (ParameterMismatch, CodecError) as exc:
                        code = (
                            ResultCode.READBACK_MISMATCH
                            if isinstance(exc, ParameterMismatch)
                            else ResultCode.PARAMETERS_REJECTED
                        )
                        log.error("step_not_started", reason=str(exc), result_code=int(code))
                        await self._finish(step, {}, code)
                        await self._close(order, unit, step, message=str(exc))
                        return None
                    self._watch[step.station].started(step.seq)
                    start_sent = True
                    await link.start(step.seq)
                    log.debug("step_started")
                    continue
                if phase == PlcPhase.RUNNING:
                    timeout = self.settings.step_timeout_s
                    overdue = timeout is not None and time.monotonic() - began > timeout
                    if not abort_sent and (_abort_steps(order) or overdue):
                        timed_out = overdue and not _abort_steps(order)
                        log.warning("step_aborting", reason="timeout" if timed_out else "cancelled")
                        await link.abort(step.seq)
                        abort_sent = True
                    await asyncio.sleep(running_poll)
                    running_poll = min(2 * running_poll, self.settings.status_poll_max_s)
                    continue
                # Finished on the PLC (acknowledged already only if our journal was lost).
                code, message = status.result_code, ""
                results: dict[str, Any] = {}
                if code == ResultCode.OK:
                    try:
                        results = await link.read_results()
                    except CodecError as exc:
                        code, message = ResultCode.RESULTS_INVALID, str(exc)
                        log.error("step_results_invalid", reason=message)
                if timed_out and code == ResultCode.ABORTED:
                    code = ResultCode.STEP_TIMEOUT
                await self._finish(step, results, code)
                if phase == PlcPhase.FINISHED:
                    await self._acknowledge(link, step.station, step.seq)
                await self._close(order, unit, step, message=message)
                return (status, read_at) if phase == PlcPhase.FINISHED else None
            except StationError as exc:
                raise_if_cancelled()
                self.absent_since.setdefault(step.station, utcnow())
                delay = link.retry_delay_s()
                if str(exc) != last_error:  # once per cause, not once per retry
                    log.warning("step_retry", error=str(exc), retry_in_s=round(delay, 3))
                last_error = str(exc)
                await asyncio.sleep(delay)

    async def _acknowledge(self, link: StationLink, station: str, seq: int) -> None:
        """Frees the PLC of the result of step `seq`, and remembers it was this bridge's doing."""
        await link.acknowledge(seq)
        self._acked[station] = seq

    async def _finish(self, step: Step, results: dict[str, Any], code: int) -> None:
        step.results = results
        step.result_code = int(code)
        step.finished_at = utcnow()
        step.phase = StepPhase.FINISHED
        await self._journaled(self.journal.finish_step_rows, step)
        log.info("step_finished", result_code=step.result_code, results=results)


def _abort_steps(order: Order) -> bool:
    """Whether a step of the order running on a PLC is to be aborted: cancelled, or aborted."""
    aborted = order.state == OrderState.FAULTED and order.result_code == ResultCode.ABORTED
    return order.state == OrderState.CANCELLED or aborted


def order_values(order: Order, unit: Unit) -> dict[str, Any]:
    """What a derivation may read: the order's options and its own values for this unit."""
    return {
        **order.options,
        "order_id": order.order_id,
        "unit_serial": unit.serial,
        "unit_index": unit.index,
        "quantity": order.quantity,
    }
