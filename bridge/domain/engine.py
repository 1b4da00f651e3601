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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from bridge.domain.absence import AbsenceWatch
from bridge.domain.admission import OpenOrderLimits, OpenOrders
from bridge.domain.dispatch import DispatchList, Waiting
from bridge.domain.events import EventHub, OrderChanged, StepChanged
from bridge.domain.job_commands import JobCommands, made
from bridge.domain.journal_writes import JournalWrites
from bridge.domain.model import Order, OrderEvent, OrderState, Step, StepPhase, Unit, UnitState, utcnow
from bridge.domain.orders import OrderRequest, ValidOrder, validate_order
from bridge.domain.ports import OrderJournal, StationLink
from bridge.domain.station_driver import StationDriver, order_values
from bridge.errors import (
    AdmissionStopped,
    JournalUnavailable,
    OrderFinished,
    OrderIdRetired,
    OrderRejected,
    UnknownOrder,
)
from bridge.handshake import HandshakeWatch, ResultCode
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
    open_orders: OpenOrderLimits = field(default_factory=OpenOrderLimits)


class LineEngine(StationDriver, AbsenceWatch, JobCommands, JournalWrites):
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
        self._holders = OpenOrders(self.settings.open_orders)  # who holds which open order
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
        self._holders.hold(order.order_id, order.client)
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

    async def submit(self, request: OrderRequest, *, client: str = "") -> Order:
        """Accept an order (journaled before this returns) or raise OrderRejected naming the field,
        LineFull if the line or `client` holds as many open orders as it may.

        Submitting an order id again with the same content returns the existing order unchanged.
        """
        valid = validate_order(self.mapping, request)
        async with self._admission:  # the id looked up and the order inserted, one admission at a time
            existing = self.get(valid.order_id)
            if existing is None:
                return await self._admit(valid, client=client)
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

    async def _admit(self, valid: ValidOrder, *, stored: bool = False, client: str = "") -> Order:
        if self._journal_error is not None:
            raise AdmissionStopped(self._journal_error.path, self._journal_error.reason)
        if (finished := self.journal.pruned_at(valid.order_id)) is not None:
            raise OrderIdRetired(finished)
        self._holders.check(client, len(self._orders))  # under the admission lock: nothing between
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
            client=client,
        )
        order.units = self._units(order, first_serial)
        accepted = self._event(order, message="stored" if stored else "accepted")
        try:  # the order is nobody else's yet: the writer may read it as it stands
            await self.journal.run(self.journal.add_order, order, accepted)
        except JournalUnavailable as exc:  # not accepted: nothing of it is kept anywhere
            self._journal_failed(exc)
            raise AdmissionStopped(exc.path, exc.reason) from exc
        self._orders[order.order_id] = order
        self._holders.hold(order.order_id, client)
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

    def refusing(self) -> str | None:
        """Why the engine would refuse any new order now (the journal failing, the line full), or None."""
        return self.journal_fault or self._holders.line_full(len(self._orders))

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

    def _units(self, order: Order, first_serial: int) -> list[Unit]:
        """The order's units, each with the parameters of every station type on its route, derived
        now (once per unit, the route's station types once per order)."""
        product = self.mapping.products[order.product]
        kinds = sorted({self.mapping.stations[s].type for step in product.route for s in alternatives(step)})
        units = []
        for index in range(order.quantity):
            unit = Unit(order.order_id, index, first_serial + index)
            values = order_values(order, unit)
            unit.parameters = {kind: derive_parameters(product, kind, values) for kind in kinds}
            units.append(unit)
        return units

    def reload(self, mapping: LineMapping) -> None:
        """Take a new mapping for orders accepted from now on (the caller checked it may replace the
        running one: same routes, stations and registers; accepted orders keep their parameters)."""
        self.mapping = mapping

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

    def _tell(self, order: Order, step: Step) -> None:
        self.events.publish(StepChanged(order, step, step.phase))

    def _forget_if_settled(self, order: Order) -> None:
        """Drop a final order from memory once no unit of it is still at a station."""
        if order.state.is_final and all(u.state != UnitState.AT_STATION for u in order.units):
            self._orders.pop(order.order_id, None)
            self._holders.release(order.order_id)
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
