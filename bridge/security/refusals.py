"""Repeated refusals audited as a few rows and a count, not one row each.

A client guessing passwords, or a script hammering a face with a wrong login, used to add an audit
row (one fsync) per request: 3,000 rows in 33 s, the journal's disk and the event loop paying for
the attacker. An anonymous OPC UA client calling SubmitOrder with a bad order in a loop added
2,300 rows a second, about 60 GB of journal a day. Here the first `first_n` refusals of a kind
(event, user, door and client address) in a window are recorded as they come, as before; further ones are
counted, and when the window closes one row says how many more there were and what the last one
was. Nothing is lost: `flush()` at stop writes what is still counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

Audit = Callable[[str, str, str, str, str], None]  # event, user, thumbprint, outcome, channel
Key = tuple[str, str, str, str]  # event, user, door (the face, or the OPC UA policy), address


@dataclass
class _Open:
    since: float
    thumbprint: str
    recorded: int = 1
    more: int = 0
    last: str = ""
    channel: str = ""


def address_of(channel: str) -> str:
    """The client's address in a channel as the faces write it ("https 10.0.0.7:51234",
    "Basic256Sha256/SignAndEncrypt 10.0.0.7:4711"); "" for none (the Python API, `--submit`)."""
    where = channel.rsplit(" ", 1)[-1]
    return where.rsplit(":", 1)[0] if ":" in where else ""


def door_of(channel: str) -> str:
    """The way in of a channel ("https", "Basic256Sha256/SignAndEncrypt"): one door's flood of
    refusals does not hide another's few from the same host."""
    return channel.rsplit(" ", 1)[0] if " " in channel else ""


def client_of(user: str, channel: str) -> str:
    """Who a request comes from, for what one client may hold (open orders): the logged-in user,
    else anonymous at the channel's address, else (no address known) one `anonymous`."""
    if user and user != "anonymous":
        return user
    address = address_of(channel)
    return f"anonymous@{address}" if address else "anonymous"


class RefusalTally:
    def __init__(
        self, audit: Audit, *, window_s: float = 60.0, first_n: int = 10, max_kinds: int = 10_000
    ) -> None:
        self._audit = audit
        self.window_s = window_s
        self.first_n = first_n  # a person's few refusals are each told; a loop's are counted
        self._max_kinds = max_kinds
        self._open: dict[Key, _Open] = {}
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, event: str, user: str, thumbprint: str, outcome: str, channel: str) -> bool:
        """One refusal: recorded now (True) if it is one of the first `first_n` of its kind in the
        window, else counted (False: a later row says how many; log and announce it only if True)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to close a window (a command, not the service): as it comes
            self._audit(event, user, thumbprint, outcome, channel)
            return True
        key = (event, user, door_of(channel), address_of(channel))
        now = time.monotonic()
        self._close_expired(now)
        entry = self._open.get(key)
        if entry is not None and entry.recorded < self.first_n:
            entry.recorded += 1
            self._audit(event, user, thumbprint, outcome, channel)
            return True
        if entry is not None:
            entry.more += 1
            entry.last, entry.channel = outcome, channel
            return False
        if len(self._open) >= self._max_kinds:  # a flood of kinds: write them out early
            self.flush()
        self._open[key] = _Open(now, thumbprint)
        self._audit(event, user, thumbprint, outcome, channel)
        if self._timer is None:
            self._timer = loop.call_later(self.window_s, self._on_timer)
        return True

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
            event, user, *_where = key
            seconds = max(1, round(now - entry.since))
            outcome = f"refused ×{entry.more} more in {seconds} s; the last: {entry.last}"
            self._audit(event, user, entry.thumbprint, outcome, entry.channel)

    def flush(self) -> None:
        """Write every count still open (at stop; nothing counted is lost)."""
        now = time.monotonic()
        for key, entry in list(self._open.items()):
            self._write(key, entry, now)
        self._open.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
