"""What the domain needs from the outside world, as narrow protocols the adapters implement."""

from __future__ import annotations

from typing import Any, Protocol

from bridge.domain.model import Order, OrderEvent, Step, Unit
from bridge.handshake import StatusBlock


class StationLink(Protocol):
    """One station PLC, spoken to through the handshake of docs/handshake.md.

    Every method raises `bridge.errors.StationError` when the PLC cannot be reached or answers
    garbage; `ParameterMismatch` when parameters read back differ from what was written.
    """

    station: str

    async def status(self) -> StatusBlock: ...

    async def write_parameters(self, parameters: dict[str, Any]) -> None: ...

    async def start(self, seq: int) -> None: ...

    async def read_results(self) -> dict[str, Any]: ...

    async def acknowledge(self, seq: int) -> None: ...

    async def abort(self, seq: int) -> None: ...

    def retry_delay_s(self) -> float:
        """How long to wait before trying again after a StationError (backoff with jitter)."""
        ...


class OrderJournal(Protocol):
    """Durable record of orders: every call has committed when it returns."""

    def add_order(self, order: Order, event: OrderEvent) -> None: ...

    def save_order(self, order: Order, event: OrderEvent) -> None: ...

    def begin_step(self, order: Order, unit: Unit, step: Step, event: OrderEvent | None) -> None: ...

    def finish_step(self, step: Step) -> None: ...

    def close_step(self, order: Order, unit: Unit, step: Step, events: list[OrderEvent]) -> None: ...

    def load_order(self, order_id: str) -> Order | None: ...

    def load_unfinished(self) -> list[Order]: ...

    def last_seq(self, station: str) -> int | None: ...

    def reserve(self, units: int) -> tuple[int, int]:
        """(accept index, first unit serial) for a new order of `units` units."""
        ...
