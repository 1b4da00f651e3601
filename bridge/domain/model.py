"""Orders, units and steps, and the order state machine (after ISA-95 job order states)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


class OrderState(StrEnum):
    """ISA-95 job order states, as a client sees them.

    received → queued → running → completed | faulted | cancelled; queued → cancelled.
    An order stored through ISA-95 Job Control waits as `stored` until started (→ queued); a
    running one may be `paused` (its next steps held) and resumed. New states go last: their
    position is their code in the OPC UA enumeration.
    """

    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAULTED = "faulted"
    CANCELLED = "cancelled"
    STORED = "stored"
    PAUSED = "paused"

    @property
    def is_final(self) -> bool:
        return self in (OrderState.COMPLETED, OrderState.FAULTED, OrderState.CANCELLED)


_ENDS = frozenset({OrderState.COMPLETED, OrderState.FAULTED, OrderState.CANCELLED})
TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    OrderState.RECEIVED: frozenset({OrderState.QUEUED, OrderState.STORED, OrderState.CANCELLED}),
    # queued → faulted: a station the order needs stayed away past its limit (docs/engine.md)
    # queued → stored: a start revoked before any unit began
    OrderState.QUEUED: frozenset(
        {OrderState.RUNNING, OrderState.FAULTED, OrderState.CANCELLED, OrderState.STORED}
    ),
    OrderState.STORED: frozenset({OrderState.QUEUED, OrderState.FAULTED, OrderState.CANCELLED}),
    OrderState.RUNNING: _ENDS | {OrderState.PAUSED},
    OrderState.PAUSED: _ENDS | {OrderState.RUNNING},
    OrderState.COMPLETED: frozenset(),
    OrderState.FAULTED: frozenset(),
    OrderState.CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the order state machine does not allow: a bug, never user input."""


class UnitState(StrEnum):
    WAITING = "waiting"
    AT_STATION = "at_station"
    DONE = "done"
    FAULTED = "faulted"
    CANCELLED = "cancelled"


class StepPhase(StrEnum):
    """How far the journal knows a step: begun (sequence number fixed), finished (result
    recorded), closed (acknowledged and the unit moved on)."""

    BEGUN = "begun"
    FINISHED = "finished"
    CLOSED = "closed"


@dataclass
class Step:
    order_id: str
    unit_index: int
    route_index: int
    station: str
    seq: int
    parameters: dict[str, Any]
    started_at: datetime
    phase: StepPhase = StepPhase.BEGUN
    finished_at: datetime | None = None
    results: dict[str, Any] | None = None
    result_code: int | None = None
    id: int | None = None


@dataclass
class Unit:
    order_id: str
    index: int
    serial: int
    next_step: int = 0
    state: UnitState = UnitState.WAITING
    # Station type → its parameters, derived when the order was accepted: a mapping reloaded later
    # never changes an accepted order. Empty for units journaled before this was kept.
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Order:
    order_id: str
    product: str
    options: dict[str, Any]
    quantity: int
    priority: int = 0
    state: OrderState = OrderState.RECEIVED
    current_station: str | None = None
    fault_station: str | None = None
    result_code: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    completed_at: datetime | None = None
    accept_index: int = 0
    client: str = ""  # who submitted it, for the per-client limit of open orders (docs/engine.md)
    units: list[Unit] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    waiting_for: str | None = None  # why a unit cannot go on (a station away); shown, not journaled

    @property
    def units_done(self) -> int:
        return sum(1 for u in self.units if u.state == UnitState.DONE)

    def move_to(self, state: OrderState) -> None:
        if state == self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"order {self.order_id}: {self.state} → {state}")
        self.state = state
        if state.is_final:
            self.completed_at = utcnow()


@dataclass(frozen=True)
class OrderEvent:
    """One state change of an order, as journaled and as streamed to watchers."""

    order_id: str
    state: OrderState
    at: datetime
    station: str | None = None
    unit_index: int | None = None
    result_code: int | None = None
    message: str = ""
