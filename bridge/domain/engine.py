"""The order execution engine: units through their routes, one step per station at a time.

Each station has a worker task. A unit waiting for its next route step sits in one dispatch list;
the first free station that may serve it (any of a parallel group) takes the best entry: highest
priority, then first accepted. Every step is journaled before it is started and its result before
it is acknowledged, and each decision is taken from the PLC's handshake status, so a restart, a
lost request or a repeated one resumes the step instead of running it again.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from bridge.domain.dispatch import DispatchList, Waiting
from bridge.domain.events import EventHub, OrderChanged, StepChanged
from bridge.domain.job_commands import JobCommands, made
from bridge.domain.model import Order, OrderEvent, OrderState, Step, StepPhase, Unit, UnitState, utcnow
from bridge.domain.orders import OrderRequest, ValidOrder, validate_order
from bridge.domain.ports import OrderJournal, Rows, StationLink
from bridge.errors import (
    AdmissionStopped,
    CodecError,
    DecisionRequired,
    JournalUnavailable,
    OrderFinished,
    OrderRejected,
    ParameterMismatch,
    StationError,
    UnknownOrder,
)
from bridge.handshake import HandshakeWatch, PlcState, ResultCode, StatusBlock, next_seq
from bridge.handshake import StepPhase as PlcPhase
from bridge.lifecycle import cancel_and_wait, raise_if_cancelled
from bridge.mapping.derive import derive_parameters
from bridge.mapping.model import LineMapping, alternatives
from bridge.supervise import start_supervised

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    status_poll_s: float = 0.005
    # While a step runs the poll interval doubles from status_poll_s up to this: a 20 s cycle costs
    # ~200 status reads, not 4,000, and its end is seen at most this late.
    status_poll_max_s: float = 0.1
    # A status this young is taken instead of reading the block again: the one that found the
    # station reachable, or the one the station's last step ended on (docs/handshake.md, "Requests
    # per step").
    status_reuse_s: float = 0.05
    step_timeout_s: float | None = None  # None: wait for the PLC however long it takes
    watcher_queue: int = 10_000
    absence_check_s: float = 0.5  # how often waiting units are checked against absent stations
    journal_retry_s: float = 0.5  # how often a journal that could not be written is tried again


class LineEngine(JobCommands):
    def __init__(
        self,
        mapping: LineMapping,
        journal: OrderJournal,
        links: Mapping[str, StationLink],
        settings: EngineSettings | None = None,
        events: EventHub | None = None,
    ) -> None:
        self.mapping = mapping
        self.events = events or EventHub()  # where every order and step change is published
        self.journal = journal
        self.links = dict(links)
        self.settings = settings or EngineSettings()
        self._orders: dict[str, Order] = {}  # orders with work left, in memory
        self._waiting = DispatchList()
        self._resume: dict[str, list[tuple[Order, Unit, Step]]] = {s: [] for s in links}
        self._seq: dict[str, int] = {}
        self._acked: dict[str, int] = {}  # station → the last step whose acknowledge the bridge wrote
        self._watch = {station: HandshakeWatch() for station in links}
        # Stations held after their PLC did what the bridge did not order, with the reason; an
        # engineer clears them (clear_station_error) once the other master is found.
        self.station_errors: dict[str, str] = {}
        self._lost_steps: set[str] = set()  # held ones whose PLC lost a running step: rerun or fail?
        self._decisions: dict[str, str] = {}  # station → the engineer's decision about that step
        self.absent_since: dict[str, datetime] = {}  # stations not answering, since when
        # While the journal cannot be written no order is admitted, and every step waits at its
        # next journal write (before its next PLC action) until a retry succeeds (journal_fault).
        self._journal_error: JournalUnavailable | None = None  # the last failure, while it lasts
        # Set (and replaced by a fresh one) whenever the work changes; waiters re-check their condition.
        # No lock and no task per notification: a notifying task that is garbage collected while it
        # waits for a lock loses the wake-up (it did: --exit-when-idle after 150 orders never exited).
        self._changed = asyncio.Event()
        self._admission = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._log = log.bind(line=mapping.line.name)
        self.station_steps: dict[str, Step | None] = dict.fromkeys(links)  # the step each station runs
        self._in_flight: dict[str, tuple[Order, Unit, Step]] = {}  # what a failed worker takes up again

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Reload unfinished orders from the journal, then start one worker per station."""
        for order in self.journal.load_unfinished():
            await self._restore(order)
        for station in self.links:
            worker = functools.partial(self._station_worker, station)
            start_supervised(self._tasks, f"station-{station}", worker)
        start_supervised(self._tasks, "absence-watch", self._absence_watch)
        self._log.info("engine_started", stations=len(self.links), resumed_orders=len(self._orders))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    async def _restore(self, order: Order) -> None:
        self._orders[order.order_id] = order
        if order.state == OrderState.RECEIVED:
            await self._set_state(order, OrderState.QUEUED)
        for unit in order.units:
            open_step = next(
                (
                    s
                    for s in reversed(order.steps)
                    if s.unit_index == unit.index and s.phase != StepPhase.CLOSED
                ),
                None,
            )
            if open_step is not None:
                self._resume[open_step.station].append((order, unit, open_step))
                self._log.info(
                    "step_resumed",
                    order_id=order.order_id,
                    station=open_step.station,
                    seq=open_step.seq,
                    phase=open_step.phase,
                )
            elif unit.state == UnitState.WAITING and order.state in (OrderState.QUEUED, OrderState.RUNNING):
                self._enqueue(order, unit)
        self._forget_if_settled(order)

    # -- the public API ---------------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> Order:
        """Accept an order (journaled before this returns) or raise OrderRejected naming the field.

        Submitting an order id again with the same content returns the existing order unchanged.
        """
        valid = validate_order(self.mapping, request)
        async with self._admission:  # the id looked up and the order inserted, one admission at a time
            existing = self.get(valid.order_id)
            if existing is None:
                return await self._admit(valid)
        same = (existing.product, existing.options, existing.quantity, existing.priority) == (
            valid.product,
            valid.options,
            valid.quantity,
            valid.priority,
        )
        if not same:
            raise OrderRejected(
                "an order with this id exists with a different product, options, quantity or priority",
                field="order_id",
            )
        return existing

    async def _admit(self, valid: ValidOrder, *, stored: bool = False) -> Order:
        if self._journal_error is not None:
            raise AdmissionStopped(self._journal_error.path, self._journal_error.reason)
        try:
            accept_index, first_serial = await self.journal.run(self.journal.reserve, valid.quantity)
        except JournalUnavailable as exc:
            self._journal_failed(exc)
            raise AdmissionStopped(exc.path, exc.reason) from exc
        order = Order(
            order_id=valid.order_id,
            product=valid.product,
            options=valid.options,
            quantity=valid.quantity,
            priority=valid.priority,
            accept_index=accept_index,
            state=OrderState.STORED if stored else OrderState.RECEIVED,
        )
        order.units = self._units(order, first_serial)
        accepted = self._event(order, message="stored" if stored else "accepted")
        try:  # the order is nobody else's yet: the writer may read it as it stands
            await self.journal.run(self.journal.add_order, order, accepted)
        except JournalUnavailable as exc:  # not accepted: nothing of it is kept anywhere
            self._journal_failed(exc)
            raise AdmissionStopped(exc.path, exc.reason) from exc
        self._orders[order.order_id] = order
        self._emit(order, accepted)
        if not stored:
            await self._set_state(order, OrderState.QUEUED)
            for unit in order.units:
                self._enqueue(order, unit)
        log.info(
            "order_accepted",
            order_id=order.order_id,
            product=order.product,
            quantity=order.quantity,
            stored=stored,
        )
        return order

    async def cancel(self, order_id: str) -> Order:
        """Stop an order: waiting units never enter another station; running steps are aborted."""
        async with self._admission:  # an order being admitted is in memory before it is cancelled
            order = self._orders.get(order_id)
        if order is None:
            stored = self.journal.load_order(order_id)
            if stored is None:
                raise UnknownOrder(order_id)
            order = stored
        if order.state == OrderState.CANCELLED:  # asked again: what was asked holds
            return order
        if order.state.is_final:
            raise OrderFinished(order_id, str(order.state))
        if self._journal_error is not None:  # a cancel not journaled would be undone by a restart
            raise JournalUnavailable(self._journal_error.path, self._journal_error.reason)
        self._waiting.drop_order(order)
        for unit in order.units:
            if unit.state == UnitState.WAITING:
                unit.state = UnitState.CANCELLED
        order.waiting_for = None
        await self._set_state(order, OrderState.CANCELLED, message="cancelled by request")
        self._forget_if_settled(order)
        return order

    def get(self, order_id: str) -> Order | None:
        return self._orders.get(order_id) or self.journal.load_order(order_id)

    async def watch(self) -> AsyncIterator[OrderEvent]:
        """Every order state change from now on, in order."""
        subscription = self.events.subscribe("watch", OrderChanged, maxsize=self.settings.watcher_queue)
        try:
            async for changed in subscription:
                yield changed.event
        finally:
            subscription.close()

    def get_active(self, order_id: str) -> Order | None:
        """The order as it stands in memory, if it still has work left (no journal read)."""
        return self._orders.get(order_id)

    def active_orders(self) -> list[Order]:
        """Orders with work left, as they stand in memory."""
        return list(self._orders.values())

    @property
    def open_orders(self) -> int:
        return len(self._orders)

    async def wait_idle(self) -> None:
        """Return once no order has work left (for tests, tools and --exit-when-idle)."""
        await self._until(lambda: not self._orders)

    # -- dispatch ---------------------------------------------------------------------------

    def _enqueue(self, order: Order, unit: Unit) -> None:
        step = self.mapping.products[order.product].route[unit.next_step]
        stations = frozenset(alternatives(step))
        key = (-order.priority, order.accept_index, unit.index)
        self._waiting.add(Waiting(key, order, unit, stations))
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            raise_if_cancelled()  # a cancel the Modbus library swallowed earlier must still end us here
            await self._changed.wait()

    async def _take(self, station: str) -> tuple[Order, Unit]:
        await self._until(lambda: self._waiting.best(station) is not None)
        chosen = self._waiting.best(station)
        assert chosen is not None
        self._waiting.take(chosen)
        return chosen.order, chosen.unit

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

    # -- stations away ----------------------------------------------------------------------

    async def _absence_watch(self) -> None:
        """Units waiting only on stations that do not answer: say why on the order, and fault it
        once every one of those stations has been away longer than its `absent_fault_after_s`.
        A step a station has begun is never given up here: the PLC may still run it."""
        while True:
            await asyncio.sleep(self.settings.absence_check_s)
            now = utcnow()
            notes: dict[str, str | None] = {}
            for waiting in list(self._waiting):
                order = waiting.order
                away = sorted(s for s in waiting.stations if s in self.absent_since)
                if len(away) < len(waiting.stations):
                    notes.setdefault(order.order_id, None)
                    continue
                limits = [self.mapping.stations[s].link.absent_fault_after_s for s in away]
                waited = [(now - self.absent_since[s]).total_seconds() for s in away]
                if all(limit is not None and w >= limit for limit, w in zip(limits, waited, strict=True)):
                    await self._fault_absent(waiting, away[0], min(waited))
                    notes.pop(order.order_id, None)
                    continue
                since = min(self.absent_since[s] for s in away)
                notes[order.order_id] = (
                    f"unit {waiting.unit.index} waits for station {' or '.join(away)}:"
                    f" not answering since {since:%Y-%m-%dT%H:%M:%SZ}"
                )
            for station, step in self.station_steps.items():
                if step is not None and station in self.station_errors:
                    notes[step.order_id] = f"unit {step.unit_index} at station {station}: held: " + (
                        self.station_errors[station]
                    )
                elif step is not None and station in self.absent_since:  # begun: it waits for the PLC
                    notes[step.order_id] = (
                        f"unit {step.unit_index} at station {station}: not answering since"
                        f" {self.absent_since[station]:%Y-%m-%dT%H:%M:%SZ}; its step waits for the PLC"
                    )
            if self.journal_fault is not None:  # then that is why every order stands
                notes = dict.fromkeys(self._orders, self.journal_fault)
            for order in list(self._orders.values()):
                note = notes.get(order.order_id)
                if note != order.waiting_for and not order.state.is_final:
                    order.waiting_for = note
                    message = note or "waiting ended: the station answers"
                    self._emit(order, self._event(order, message=message))

    async def _fault_absent(self, waiting: Waiting, station: str, waited_s: float) -> None:
        order, unit = waiting.order, waiting.unit
        message = f"station {station} did not answer for {waited_s:.0f} s (link.absent_fault_after_s)"
        log.error("order_faulted_station_absent", order_id=order.order_id, station=station, waited_s=waited_s)
        self._waiting.drop_order(order)
        unit.state = UnitState.FAULTED
        for sibling in order.units:
            if sibling.state == UnitState.WAITING:
                sibling.state = UnitState.CANCELLED
        order.fault_station, order.result_code = station, int(ResultCode.STATION_ABSENT)
        order.waiting_for = None
        order.current_station = None
        order.move_to(OrderState.FAULTED)
        event = self._event(order, station=station, unit=unit.index, code=order.result_code, message=message)
        await self._journaled(self.journal.save_order_rows, order, event)
        self._emit(order, event)
        self._forget_if_settled(order)

    def _units(self, order: Order, first_serial: int) -> list[Unit]:
        """The order's units, each with the parameters of every station type on its route, derived
        now (once per unit, the route's station types once per order)."""
        product = self.mapping.products[order.product]
        kinds = sorted({self.mapping.stations[s].type for step in product.route for s in alternatives(step)})
        units = []
        for index in range(order.quantity):
            unit = Unit(order.order_id, index, first_serial + index)
            values = _order_values(order, unit)
            unit.parameters = {kind: derive_parameters(product, kind, values) for kind in kinds}
            units.append(unit)
        return units

    def reload(self, mapping: LineMapping) -> None:
        """Take a new mapping for orders accepted from now on (the caller checked it may replace the
        running one: same routes, stations and registers; accepted orders keep their parameters)."""
        self.mapping = mapping

    async def _begin(self, order: Order, unit: Unit, station: str) -> Step:
        self._seq[station] = next_seq(self._seq[station])
        kind = self.mapping.stations[station].type
        parameters = unit.parameters.get(kind)
        if parameters is None:  # a unit journaled before parameters were kept with it
            parameters = derive_parameters(
                self.mapping.products[order.product], kind, _order_values(order, unit)
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

    async def _close(self, order: Order, unit: Unit, step: Step, *, message: str = "") -> None:
        step.phase = StepPhase.CLOSED
        order.waiting_for = None  # it moved on (the absence watch says so again if it must wait anew)
        route = self.mapping.products[order.product].route
        events: list[OrderEvent] = []
        if step.result_code == ResultCode.OK:
            unit.next_step += 1
            unit.state = UnitState.DONE if unit.next_step == len(route) else UnitState.WAITING
        elif order.state == OrderState.CANCELLED:
            unit.state = UnitState.CANCELLED
        else:
            unit.state = UnitState.FAULTED
            if not order.state.is_final:
                order.fault_station = step.station
                order.result_code = step.result_code
                order.move_to(OrderState.FAULTED)
                self._waiting.drop_order(order)
                for sibling in order.units:
                    if sibling.state == UnitState.WAITING:
                        sibling.state = UnitState.CANCELLED
                name = self.mapping.result_codes.get(step.result_code or 0, "")
                events.append(
                    self._event(
                        order,
                        station=step.station,
                        unit=unit.index,
                        code=step.result_code,
                        message=message or name,
                    )
                )
        if unit.state == UnitState.WAITING and order.state.is_final:
            unit.state = UnitState.CANCELLED
        # CANCELLED in an order not final: a unit a Stop left out
        if not order.state.is_final and all(
            u.state in (UnitState.DONE, UnitState.CANCELLED) for u in order.units
        ):
            order.current_station = None
            order.move_to(OrderState.COMPLETED)
            done = order.units_done == order.quantity
            events.append(
                self._event(order, message="all units done" if done else f"stopped: {made(order)}")
            )
        await self._journaled(self.journal.close_step_rows, order, unit, step, events)
        for event in events:
            self._emit(order, event)
        if unit.state == UnitState.WAITING and order.state != OrderState.PAUSED:
            self._enqueue(order, unit)
        self._forget_if_settled(order)

    # -- state and events -------------------------------------------------------------------

    async def _set_state(self, order: Order, state: OrderState, *, message: str = "") -> None:
        order.move_to(state)
        event = self._event(order, message=message)
        await self._journaled(self.journal.save_order_rows, order, event)
        self._emit(order, event)

    # -- a journal that cannot be written --------------------------------------------------

    async def _journaled(self, rows_of: Callable[..., Rows], *args: Any) -> int | None:
        """The rows `rows_of(*args)` committed (off the loop), however long the journal takes to
        become writable again; the first row's id.

        Every journal write comes before the PLC action it records (docs/handshake.md), so a
        write that waits here holds the step exactly where it is, and the same write, retried,
        commits what memory already holds. Meanwhile admission is refused with the reason."""
        while True:
            try:
                row_id = await self.journal.commit(rows_of(*args))
            except JournalUnavailable as exc:
                self._journal_failed(exc)
                await asyncio.sleep(self.settings.journal_retry_s)
                continue
            if self.journal_fault is not None:
                self._journal_recovered()
            return row_id

    @property
    def journal_fault(self) -> str | None:
        """Why the line stands while the journal cannot be written, else None."""
        error = self._journal_error
        if error is None:
            return None
        return f"the journal cannot be written ({error.reason}): the line stands until it can"

    def _journal_failed(self, exc: JournalUnavailable) -> None:
        if self.journal_fault is None:
            log.error("journal_unavailable", path=str(exc.path), reason=exc.reason)
            self._start_journal_probe()
        self._journal_error = exc
        self._notify()

    def _journal_recovered(self) -> None:
        log.warning("journal_recovered", was=self.journal_fault)
        self._journal_error = None
        self._notify()

    def _start_journal_probe(self) -> None:
        """Admission resumes when a write succeeds; with no step under way to retry one, a probe
        writes instead (an idle line must start taking orders again by itself too)."""
        if any(t.get_name() == "journal-probe" and not t.done() for t in self._tasks):
            return

        async def probe() -> None:
            while self.journal_fault is not None:
                await asyncio.sleep(self.settings.journal_retry_s)
                try:
                    await self.journal.run(self.journal.probe)
                except JournalUnavailable:
                    continue
                self._journal_recovered()

        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(probe(), name="journal-probe"))

    def _tell(self, order: Order, step: Step) -> None:
        self.events.publish(StepChanged(order, step, step.phase))

    def _forget_if_settled(self, order: Order) -> None:
        """Drop a final order from memory once no unit of it is still at a station."""
        if order.state.is_final and all(u.state != UnitState.AT_STATION for u in order.units):
            self._orders.pop(order.order_id, None)
            self._notify()

    def _event(
        self,
        order: Order,
        *,
        station: str | None = None,
        unit: int | None = None,
        code: int | None = None,
        message: str = "",
    ) -> OrderEvent:
        return OrderEvent(order.order_id, order.state, utcnow(), station, unit, code, message)

    def _emit(self, order: Order, event: OrderEvent) -> None:
        log.info(
            "order_state",
            order_id=event.order_id,
            state=str(event.state),
            at_station=event.station,
            unit=event.unit_index,
            result_code=event.result_code,
        )
        self.events.publish(OrderChanged(event, order))


def _abort_steps(order: Order) -> bool:
    """Whether a step of the order running on a PLC is to be aborted: cancelled, or aborted."""
    aborted = order.state == OrderState.FAULTED and order.result_code == ResultCode.ABORTED
    return order.state == OrderState.CANCELLED or aborted


def _order_values(order: Order, unit: Unit) -> dict[str, Any]:
    """What a derivation may read: the order's options and its own values for this unit."""
    return {
        **order.options,
        "order_id": order.order_id,
        "unit_serial": unit.serial,
        "unit_index": unit.index,
        "quantity": order.quantity,
    }
