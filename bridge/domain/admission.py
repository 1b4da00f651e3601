"""How many open orders the line takes, in all and from one client: the order queue is bounded
like every other queue, so a runaway MES script or a looping page fills neither memory nor the
journal, and one client cannot take every place in the queue (docs/engine.md, "Open-order limits").

An order is open from its admission until it leaves memory (finished and off every station). Who
holds it is journaled with it, so a restart gives each client back the orders it held.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bridge.errors import LineFull, count_option


@dataclass(frozen=True)
class OpenOrderLimits:
    per_line: int = 10_000
    per_client: int = 5_000  # half the line's: one client leaves room for another

    def __post_init__(self) -> None:  # a --config file's values come unchecked by the command line
        count_option("max_open_orders", self.per_line)
        count_option("max_open_orders_per_client", self.per_client)


class OpenOrders:
    """The clients holding open orders, counted at admission and released when an order is forgotten."""

    def __init__(self, limits: OpenOrderLimits) -> None:
        self.limits = limits
        self._client_of: dict[str, str] = {}
        self._held: Counter[str] = Counter()

    def line_full(self, open_now: int) -> str | None:
        """Why the line takes no further order from anyone, or None."""
        if open_now >= self.limits.per_line:
            return f"the line holds {open_now} open orders, as many as it takes (--max-open-orders)"
        return None

    def check(self, client: str, open_now: int) -> None:
        """LineFull, saying which limit, if one more open order (from `client`) is one too many."""
        if (full := self.line_full(open_now)) is not None:
            raise LineFull(full)
        held = self._held[client]
        if held >= self.limits.per_client:
            raise LineFull(
                f"client {client!r} holds {held} open orders, as many as one client may"
                " (--max-open-orders-per-client)"
            )

    def hold(self, order_id: str, client: str) -> None:
        self._client_of[order_id] = client
        self._held[client] += 1

    def release(self, order_id: str) -> None:
        client = self._client_of.pop(order_id, None)
        if client is not None:
            self._held[client] -= 1
            if not self._held[client]:
                del self._held[client]
