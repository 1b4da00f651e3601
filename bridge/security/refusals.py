"""Repeated refusals audited as one row with a count, not one row each.

A client guessing passwords, or a script hammering a face with a wrong login, used to add an audit
row (one fsync) per request: 3,000 rows in 33 s, the journal's disk and the event loop paying for
the attacker. Here the first refusal of a kind (event, user, client address, reason) is recorded at
once, as before; further ones within `window_s` are counted, and when the window closes one row
says how many more there were. Nothing is lost: `flush()` at stop writes what is still counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

Audit = Callable[[str, str, str, str, str], None]  # event, user, thumbprint, outcome, channel
Key = tuple[str, str, str, str]  # event, user, address, reason


@dataclass
class _Open:
    since: float
    more: int
    channel: str


class RefusalTally:
    def __init__(self, audit: Audit, *, window_s: float = 60.0, max_kinds: int = 10_000) -> None:
        self._audit = audit
        self.window_s = window_s
        self._max_kinds = max_kinds
        self._open: dict[Key, _Open] = {}
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, event: str, user: str, outcome: str, channel: str, address: str) -> None:
        """One refusal: recorded now if it is the first of its kind in the window, else counted."""
        key = (event, user, address, outcome)
        now = time.monotonic()
        self._close_expired(now)
        entry = self._open.get(key)
        if entry is not None:
            entry.more += 1
            entry.channel = channel
            return
        if len(self._open) >= self._max_kinds:  # a flood of kinds: write them out early
            self.flush()
        self._open[key] = _Open(now, 0, channel)
        self._audit(event, user, "", outcome, channel)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._close_expired(time.monotonic())
        if self._open:
            self._timer = asyncio.get_running_loop().call_later(self.window_s, self._on_timer)

    def _close_expired(self, now: float) -> None:
        for key in [k for k, e in self._open.items() if now - e.since >= self.window_s]:
            self._write(key, self._open.pop(key), now)

    def _write(self, key: Key, entry: _Open, now: float) -> None:
        if entry.more:
            event, user, _address, outcome = key
            seconds = max(1, round(now - entry.since))
            self._audit(event, user, "", f"{outcome} (×{entry.more} more in {seconds} s)", entry.channel)

    def flush(self) -> None:
        """Write every count still open (at stop; nothing counted is lost)."""
        now = time.monotonic()
        for key, entry in list(self._open.items()):
            self._write(key, entry, now)
        self._open.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
