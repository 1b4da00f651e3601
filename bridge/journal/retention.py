"""Journal retention: finished orders, audit records and alarm changes older than
`--journal-retention-days` leave the journal, so a line that runs for years does not fill its
disk (and then refuse orders at the reserve, space.py).

Nothing a running or restarted bridge still needs goes: an order with work left or a step on a PLC
to settle, the order holding each station's newest step (the handshake numbers its next step from
it, and the OPC UA face shows it), each alarm's newest change (what a restart takes up), and the id
of every order removed, so that the same id is never accepted again (a replayed order would run
twice). Each batch is one short transaction on the journal's writer thread, between step commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass

from bridge.domain.model import StepPhase
from bridge.errors import amount_option
from bridge.journal.reads import finished_orders

BATCH = 50  # orders, audit records or alarm changes in one transaction: a few ms (bench.retention)


def retention_s(days: object) -> float:
    """`--journal-retention-days` in seconds; 0 keeps everything."""
    return amount_option("journal_retention_days", days, "days, 0 (keep all) or more") * 86_400


@dataclass(frozen=True)
class Cursor:
    """Where the last batch stopped in each table: the next starts past it, so what is kept on
    purpose is passed over, not looked at again."""

    order: tuple[str, str] = ("", "")  # (completed_at, order_id)
    audit: int = 0  # row id
    alarm: int = 0
    done: bool = False  # nothing older is left


@dataclass(frozen=True)
class Pruned:
    orders: int = 0
    audit: int = 0
    alarms: int = 0
    cursor: Cursor = Cursor()

    def __add__(self, later: Pruned) -> Pruned:
        return Pruned(self.orders + later.orders, self.audit + later.audit, self.alarms + later.alarms,
                      later.cursor)  # fmt: skip


def prune_batch(db: sqlite3.Connection, before: str, stations: Collection[str], cursor: Cursor) -> Pruned:
    """One batch of each kind older than `before` (ISO 8601, the journal's form), inside the
    caller's transaction."""
    held = _newest_step_orders(db, stations)
    rows = finished_orders(db, "", before, cursor.order, BATCH)
    gone = [
        (row["order_id"], row["completed_at"])
        for row in rows
        if row["order_id"] not in held and not _has_open_step(db, row["order_id"])
    ]
    if gone:
        db.executemany("INSERT OR IGNORE INTO pruned (order_id, completed_at) VALUES (?,?)", gone)
        ids = [(order_id,) for order_id, _ in gone]
        for table in ("events", "steps", "units", "cleared", "orders"):
            db.executemany(f"DELETE FROM {table} WHERE order_id=?", ids)
    audit, audit_end, audit_left = _older_rows(db, "audit", "", before, cursor.audit)
    alarms, alarm_end, alarms_left = _older_rows(
        db, "alarms", "(SELECT MAX(id) FROM alarms newer WHERE newer.alarm = alarms.alarm) AS newest",
        before, cursor.alarm,
    )  # fmt: skip
    order_end = (rows[-1]["completed_at"], rows[-1]["order_id"]) if rows else cursor.order
    done = len(rows) < BATCH and not audit_left and not alarms_left
    return Pruned(len(gone), audit, alarms, Cursor(order_end, audit_end, alarm_end, done))


def _older_rows(
    db: sqlite3.Connection, table: str, newest: str, before: str, after: int
) -> tuple[int, int, bool]:
    """Delete the rows of `table` past row `after` written before `before`, a batch at most, but
    never the row `newest` names (an alarm's last change). Rows are written in time order, so a
    batch stops at the first newer row. (deleted, last row looked at, whether older rows may be left)."""
    columns = f"id, at, {newest}" if newest else "id, at, NULL"
    rows = db.execute(
        f"SELECT {columns} FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (after, BATCH)
    ).fetchall()
    older = [row for row in rows if row[1] < before]
    doomed = [(row[0],) for row in older if row[2] is None or row[0] < row[2]]
    db.executemany(f"DELETE FROM {table} WHERE id=?", doomed)
    last = older[-1][0] if older else after
    return len(doomed), last, len(older) == BATCH


def pruned_at(db: sqlite3.Connection, order_id: str) -> str | None:
    """When the order `order_id` finished, if retention removed it (its id stays taken)."""
    row = db.execute("SELECT completed_at FROM pruned WHERE order_id=?", (order_id,)).fetchone()
    return None if row is None else str(row[0])


def _newest_step_orders(db: sqlite3.Connection, stations: Collection[str]) -> set[str]:
    newest = "SELECT order_id FROM steps WHERE station=? ORDER BY id DESC LIMIT 1"
    return {row[0] for station in stations if (row := db.execute(newest, (station,)).fetchone())}


def _has_open_step(db: sqlite3.Connection, order_id: str) -> bool:
    found = db.execute(
        "SELECT 1 FROM steps WHERE order_id=? AND phase != ? LIMIT 1", (order_id, StepPhase.CLOSED)
    )
    return found.fetchone() is not None
