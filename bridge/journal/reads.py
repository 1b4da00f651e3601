"""Reads of the journal that need nothing but a connection: the bridge's own (its reader) and the
command line's (read only, beside a running bridge: WAL) ask the same questions the same way."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.domain.model import OrderState
from bridge.journal.schema import ALARM_COLUMNS, AUDIT_COLUMNS

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


AUDIT_FIELDS = tuple(name.strip() for name in AUDIT_COLUMNS.split(","))  # as a record's keys


AuditRow = tuple[str, str, str, str, str, str]


def audit_rows(db: sqlite3.Connection, limit: int, since: str = "") -> list[AuditRow]:
    """The newest `limit` audit records written at or after `since` (ISO 8601), oldest first."""
    rows = db.execute(
        f"SELECT {AUDIT_COLUMNS} FROM audit WHERE at >= ? ORDER BY id DESC LIMIT ?", (since, limit)
    ).fetchall()
    return [tuple(row) for row in reversed(rows)]  # type: ignore[misc]


def all_audit_rows(db: sqlite3.Connection, since: str = "", chunk: int = 1000) -> Iterator[AuditRow]:
    """Every audit record written at or after `since`, oldest first, a chunk in memory at a time."""
    cursor = db.execute(f"SELECT {AUDIT_COLUMNS} FROM audit WHERE at >= ? ORDER BY id", (since,))
    while rows := cursor.fetchmany(chunk):
        yield from (tuple(row) for row in rows)  # type: ignore[misc]


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
