"""Stations that stay away: the watch that says on each order which station it waits for, and
faults a unit once every station it could go to has been away longer than its link allows.

A part of LineEngine, like station_driver.py; the names declared on the class are the engine's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from bridge.domain.dispatch import DispatchList, Waiting
from bridge.domain.model import Order, OrderEvent, OrderState, Step, UnitState, utcnow
from bridge.domain.ports import OrderJournal
from bridge.handshake import ResultCode
from bridge.mapping.model import LineMapping

log = structlog.get_logger(__name__)


class AbsenceWatch:
    """The absence watch, mixed into LineEngine; the names declared here are the engine's."""

    mapping: LineMapping
    journal: OrderJournal
    settings: Any  # EngineSettings
    station_errors: dict[str, str]
    absent_since: dict[str, datetime]
    station_steps: dict[str, Step | None]
    journal_fault: str | None
    _orders: dict[str, Order]
    _waiting: DispatchList
    _journaled: Callable[..., Any]
    _event: Callable[..., OrderEvent]
    _emit: Callable[[Order, OrderEvent], None]
    _forget_if_settled: Callable[[Order], None]

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
