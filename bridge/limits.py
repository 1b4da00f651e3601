"""Bounds on what a client may send, and on how much of it is stored or logged.

A refused input is still recorded (audit, log), so every recorded copy of client text is clipped.
"""

from __future__ import annotations

import time

AUDIT_OUTCOME_CHARS = 512
LOGGED_TEXT_CHARS = 200  # an order id, a product or a reason as it appears in a log line
OPTIONS_JSON_CHARS = 64 * 1024  # SubmitOrder's Options argument
OPTIONS_JSON_DEPTH = 8  # nesting of that JSON (options are flat; a little room for what may come)
HTTP_BODY_BYTES = 64 * 1024  # a request body of the HTTP face (an order is a few hundred bytes)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    note = f"… ({len(text)} chars)"
    return text[: max(limit - len(note), 0)] + note


def nesting_depth(text: str) -> int:
    """How deep JSON `text` nests, found without parsing it, so a refusal never recurses as deep as
    a client's brackets (brackets inside strings only over-count, which errs on the safe side)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class LogThrottle:
    """Whether to log a refusal now: at most once every `every_s` per kind, so a flood of clients
    is one line with counts per interval, never a line per connection or request."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._logged_at: dict[str, float] = {}

    def due(self, kind: str = "") -> bool:
        now = time.monotonic()
        if now - self._logged_at.get(kind, float("-inf")) < self.every_s:
            return False
        self._logged_at[kind] = now
        return True
