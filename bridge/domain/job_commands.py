"""The ISA-95 job commands of the engine (docs/isa95.md "What each method does on this line"):
store, start, revoke a start, pause, resume, stop, abort, update, cancel before start, clear.

A mixin of LineEngine, kept apart so the engine module reads as dispatch and the handshake: these
methods use the engine's admission lock, dispatch list, journal writes and events, and nothing a
station link offers. Every command journals before it answers, as every engine change does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bridge.domain.dispatch import DispatchList
from bridge.domain.model import Order, OrderEvent, OrderState, Unit, UnitState, utcnow
from bridge.domain.orders import OrderRequest, validate_order
from bridge.domain.ports import OrderJournal
from bridge.errors import JournalUnavailable, OrderRejected, UnknownOrder, WrongOrderState
from bridge.handshake import ResultCode
from bridge.mapping.model import LineMapping


class JobCommands:
    """The commands, mixed into LineEngine; the names declared here are the engine's that they use."""

    mapping: LineMapping
    journal: OrderJournal
    _orders: dict[str, Order]
    _waiting: DispatchList
    _admission: asyncio.Lock
    _journal_error: JournalUnavailable | None
    get: Callable[[str], Order | None]
    cancel: Callable[[str], Any]
    _admit: Callable[..., Any]
    _enqueue: Callable[[Order, Unit], None]
    _set_state: Callable[..., Any]
    _journaled: Callable[..., Any]
    _journal_failed: Callable[[JournalUnavailable], None]
    _event: Callable[..., OrderEvent]
    _emit: Callable[[Order, OrderEvent], None]
    _units: Callable[[Order, int], list[Unit]]
    _forget_if_settled: Callable[[Order], None]

    async def store_order(self, request: OrderRequest, *, start: bool = False, client: str = "") -> Order:
        """Accept an order held out of dispatch until `start_order` (ISA-95 Store), journaled as
        stored so a restart keeps it stored; with `start`, one that may run at once (StoreAndStart).
        An id that exists already is refused, whatever its content."""
        valid = validate_order(self.mapping, request)
        async with self._admission:
            if self.get(valid.order_id) is not None:
                raise OrderRejected("an order with this id exists", field="order_id")
            return await self._admit(valid, stored=not start, client=client)

    async def cancel_job(self, order_id: str) -> Order:
        """ISA-95 Cancel: only a job that has not started."""
        await self._active(order_id, "cancel", OrderState.STORED, OrderState.QUEUED)
        return await self.cancel(order_id)

    def stored_orders(self) -> int:
        return sum(1 for order in self._orders.values() if order.state == OrderState.STORED)

    async def _active(self, order_id: str, action: str, *states: OrderState) -> Order:
        """The order in memory if it is in one of `states`; else UnknownOrder or WrongOrderState."""
        async with self._admission:
            order = self._orders.get(order_id)
        if order is None:
            order = self.journal.load_order(order_id)
            if order is None:
                raise UnknownOrder(order_id)
        if order.state not in states or order.order_id not in self._orders:
            raise WrongOrderState(order_id, str(order.state), action, " or ".join(states))
        if self._journal_error is not None:  # a change not journaled would be undone by a restart
            raise JournalUnavailable(self._journal_error.path, self._journal_error.reason)
        return order

    async def start_order(self, order_id: str) -> Order:
        """A stored order may run: its units join dispatch."""
        order = await self._active(order_id, "start", OrderState.STORED)
        await self._set_state(order, OrderState.QUEUED, message="started by request")
        for unit in order.units:
            self._enqueue(order, unit)
        return order

    async def revoke_start(self, order_id: str) -> Order:
        """Back to stored, if no unit of it has begun."""
        order = await self._active(order_id, "revoke start", OrderState.QUEUED)
        self._waiting.drop_order(order)
        await self._set_state(order, OrderState.STORED, message="start revoked by request")
        return order

    async def pause_order(self, order_id: str) -> Order:
        """Hold the order's next steps; a step at a station finishes, its unit then waits."""
        order = await self._active(order_id, "pause", OrderState.RUNNING)
        self._waiting.drop_order(order)
        await self._set_state(order, OrderState.PAUSED, message="paused by request")
        return order

    async def resume_order(self, order_id: str) -> Order:
        order = await self._active(order_id, "resume", OrderState.PAUSED)
        await self._set_state(order, OrderState.RUNNING, message="resumed by request")
        for unit in order.units:
            if unit.state == UnitState.WAITING:
                self._enqueue(order, unit)
        return order

    async def stop_order(self, order_id: str) -> Order:
        """End the order after the units in progress: units not begun are cancelled. A paused
        order ends at once (its units between stations stay where they are, cancelled)."""
        order = await self._active(order_id, "stop", OrderState.RUNNING, OrderState.PAUSED)
        self._waiting.drop_order(order)
        paused = order.state == OrderState.PAUSED
        for unit in order.units:
            if unit.state == UnitState.WAITING and (paused or unit.next_step == 0):
                unit.state = UnitState.CANCELLED
        in_progress = any(u.state in (UnitState.WAITING, UnitState.AT_STATION) for u in order.units)
        if paused or not in_progress:
            await self._set_state(order, OrderState.COMPLETED, message=f"stopped by request: {made(order)}")
            self._forget_if_settled(order)
        else:
            event = self._event(order, message=f"stop requested: {made(order)} so far, the begun go on")
            await self._journaled(self.journal.save_order_rows, order, event)
            self._emit(order, event)
            for unit in order.units:
                if unit.state == UnitState.WAITING:
                    self._enqueue(order, unit)
        return order

    async def abort_order(self, order_id: str) -> Order:
        """Fault what has not finished: waiting units never enter another station, a step on a PLC
        is aborted as a cancel aborts it."""
        states = (OrderState.STORED, OrderState.QUEUED, OrderState.RUNNING, OrderState.PAUSED)
        order = await self._active(order_id, "abort", *states)
        self._waiting.drop_order(order)
        for unit in order.units:
            if unit.state == UnitState.WAITING:
                unit.state = UnitState.CANCELLED
        order.waiting_for = None
        order.result_code = int(ResultCode.ABORTED)  # and a step running on a PLC is aborted (_drive)
        await self._set_state(order, OrderState.FAULTED, message=f"aborted by request: {made(order)}")
        self._forget_if_settled(order)
        return order

    async def update_order(self, request: OrderRequest) -> Order:
        """Replace a stored or started order's content before any unit of it has begun (ISA-95
        Update). Its units are made anew (fresh serials); its place in the queue is kept."""
        valid = validate_order(self.mapping, request)
        order = await self._active(valid.order_id, "update", OrderState.STORED, OrderState.QUEUED)
        try:
            _, first_serial = await self.journal.run(self.journal.reserve, valid.quantity)
        except JournalUnavailable as exc:
            self._journal_failed(exc)
            raise
        if order.steps or order.state not in (OrderState.STORED, OrderState.QUEUED):  # began meanwhile
            raise WrongOrderState(order.order_id, str(order.state), "update", "stored or queued")
        self._waiting.drop_order(order)
        order.product, order.options = valid.product, valid.options
        order.quantity, order.priority = valid.quantity, valid.priority
        order.units = self._units(order, first_serial)
        event = self._event(order, message="updated by request")
        await self._journaled(self.journal.replace_order_rows, order, event)
        self._emit(order, event)
        if order.state == OrderState.QUEUED:
            for unit in order.units:
                self._enqueue(order, unit)
        return order

    async def clear_order(self, order_id: str) -> None:
        """Take an ended order off the job order list (it stays in the journal and under Orders)."""
        order = self.get(order_id)
        if order is None:
            raise UnknownOrder(order_id)
        if not order.state.is_final or order.order_id in self._orders:
            raise WrongOrderState(
                order_id, str(order.state), "clear", "an ended order (completed, faulted, cancelled)"
            )
        await self._journaled(self.journal.clear_order_rows, order_id, utcnow())


def made(order: Order) -> str:
    return f"{order.units_done} of {order.quantity} units made"
