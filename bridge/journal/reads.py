"""Reads of the journal that need nothing but a connection: the bridge's own (its reader) and the
command line's (read only, beside a running bridge: WAL) ask the same questions the same way."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from bridge.domain.model import OrderState
from bridge.journal.schema import ALARM_COLUMNS

FINAL_STATES = (OrderState.COMPLETED, OrderState.FAULTED, OrderState.CANCELLED)
_FINISHED = (  # by the (completed_at, order_id) index past the cursor (`+state`: not by the state's index)
    "SELECT order_id, product, options, quantity, state, completed_at FROM orders"
    " WHERE completed_at >= ? AND completed_at < ? AND (completed_at, order_id) > (?, ?)"
    f" AND +state IN ({','.join('?' * len(FINAL_STATES))}) ORDER BY completed_at, order_id LIMIT ?"
)


def open_read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def audit_rows(db: sqlite3.Connection, limit: int) -> list[tuple[str, str, str, str, str, str]]:
    """The newest `limit` audit records, oldest first: (at, event, user, thumbprint, outcome, channel)."""
    rows = db.execute(
        "SELECT at, event, user, thumbprint, outcome, channel FROM audit ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return [tuple(row) for row in reversed(rows)]  # type: ignore[misc]


def alarm_rows(db: sqlite3.Connection, alarm: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` changes (of one alarm, or all), oldest first."""
    where, args = ("WHERE alarm = ?", (alarm, limit)) if alarm else ("", (limit,))
    rows = db.execute(f"SELECT {ALARM_COLUMNS} FROM alarms {where} ORDER BY id DESC LIMIT ?", args).fetchall()
    return [dict(row) for row in reversed(rows)]


def finished_orders(
    db: sqlite3.Connection, since: str, before: str, after: tuple[str, str], limit: int
) -> list[sqlite3.Row]:
    """At most `limit` orders finished in [since, before) (ISO 8601, the journal's form) past
    `after`, a (completed_at, order_id) cursor, oldest first: a page costs no more late in a long
    journal than early."""
    return db.execute(_FINISHED, (since, before, *after, *FINAL_STATES, limit)).fetchall()
