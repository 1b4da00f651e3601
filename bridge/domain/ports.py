"""What the domain needs from the outside world, as narrow protocols the adapters implement."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from bridge.domain.model import Order, OrderEvent, Step, Unit
from bridge.handshake import StatusBlock

T = TypeVar("T")


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


# One journal write as the journal will commit it: statements built from memory as it stands.
Rows = list[tuple[str, Any, bool]]


class OrderJournal(Protocol):
    """Durable record of orders. A write's rows are built on the caller's thread (`*_rows`) and
    committed off it (`commit`): committed when the await returns, never before."""

    def save_order_rows(self, order: Order, event: OrderEvent) -> Rows: ...

    def begin_step_rows(self, order: Order, unit: Unit, step: Step, event: OrderEvent | None) -> Rows: ...

    def finish_step_rows(self, step: Step) -> Rows: ...

    def close_step_rows(self, order: Order, unit: Unit, step: Step, events: list[OrderEvent]) -> Rows: ...

    def replace_order_rows(self, order: Order, event: OrderEvent) -> Rows: ...

    def clear_order_rows(self, order_id: str, at: datetime) -> Rows: ...

    async def commit(self, rows: Rows) -> int | None:
        """Committed in one transaction; the first statement's row id."""
        ...

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` where the journal's writes run (reserve, add_order, probe)."""
        ...

    def add_order(self, order: Order, event: OrderEvent) -> None: ...

    def probe(self) -> None: ...

    def load_order(self, order_id: str) -> Order | None: ...

    def load_unfinished(self) -> list[Order]: ...

    def last_seq(self, station: str) -> int | None: ...

    def pruned_at(self, order_id: str) -> datetime | None:
        """When the order finished, if journal retention has removed it since."""
        ...

    def reserve(self, units: int) -> tuple[int, int]:
        """(accept index, first unit serial) for a new order of `units` units."""
        ...
