"""SQLite (WAL) implementation of the order journal.

Each write is one transaction, committed before it returns: the engine acknowledges nothing (to a
client or to a PLC) that is not on disk. WAL with synchronous=NORMAL survives a killed process; use
synchronous="FULL" to survive a power cut as well, at some cost per commit.

Writes run on one writer thread of the journal's own, never on the event loop: the engine builds a
write's rows from memory as it stands (`*_rows`, on the loop, so no other thread reads objects the
loop changes) and awaits `commit(rows)`. Audit records and alarm changes (alarm_rows.py) are
queued and written in batches by the same thread. Reads from the loop use a second connection
(WAL lets it read while the writer writes).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bridge.domain.model import Order, OrderEvent, OrderState, Step, StepPhase, Unit, UnitState
from bridge.errors import ConfigurationError, JournalUnavailable
from bridge.journal.alarm_rows import AlarmRows
from bridge.journal.check import check_database, remedy
from bridge.journal.queued import QueuedRows
from bridge.journal.reads import audit_rows
from bridge.journal.retention import Cursor, Pruned, prune_batch, pruned_at
from bridge.journal.rows import (
    Rows,
    add_order_rows,
    begin_step_rows,
    clear_order_rows,
    close_step_rows,
    finish_step_rows,
    replace_order_rows,
    save_order_rows,
)
from bridge.journal.schema import ALARM_SQL, AUDIT_SQL, SCHEMA
from bridge.journal.space import DiskReserve
from bridge.journal.writer import WRITER_WAIT_S, WriterThread
from bridge.limits import AUDIT_OUTCOME_CHARS, clip

log = structlog.get_logger(__name__)
T = TypeVar("T")
AUDIT_QUEUE = 10_000  # audit records waiting for the writer; beyond that the oldest is lost, counted
ALARM_QUEUE = 10_000


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class SqliteJournal(AlarmRows):
    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", keep_free_mb: float = 64) -> None:
        """Open (or create) the journal; one that is damaged or may not be written stops here with
        ConfigurationError naming the file and what to do, before anything in it is changed.
        `keep_free_mb`: disk space no new order may take (reserve()), for the orders under way."""
        self.path = Path(path)
        self.space = DiskReserve(self.path.parent, keep_free_mb)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(remedy(self.path, str(exc))) from None
        self._db.row_factory = sqlite3.Row
        try:
            problems = check_database(self._db) if self.path.stat().st_size else []
            if problems:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._migrate()
            # the loop's reads: a connection of their own, never inside the writer's transaction
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self._db.close()
            raise ConfigurationError(remedy(self.path, str(exc))) from None
        self._reader.row_factory = sqlite3.Row
        self._writer = WriterThread("journal-writer", self._execute_group)
        self._audit = QueuedRows("audit", AUDIT_SQL, AUDIT_QUEUE, self._writer, self._execute)
        self._alarms = QueuedRows("alarms", ALARM_SQL, ALARM_QUEUE, self._writer, self._execute)
        self._closed = False

    def _migrate(self) -> None:
        """Bring a journal written by an earlier version up to this schema (columns only added)."""
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(units)")}
        if "parameters" not in columns:
            self._db.execute("ALTER TABLE units ADD COLUMN parameters TEXT")
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(audit)")}
        if "channel" not in columns:
            self._db.execute("ALTER TABLE audit ADD COLUMN channel TEXT NOT NULL DEFAULT ''")
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(orders)")}
        if "client" not in columns:  # orders from before it was kept: the client with no name holds them
            self._db.execute("ALTER TABLE orders ADD COLUMN client TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        """Write what is queued, stop the writer, close both connections."""
        if self._closed:
            return
        self._closed = self._audit.closed = self._alarms.closed = True
        self._audit.written(WRITER_WAIT_S)
        self._alarms.written(WRITER_WAIT_S)
        self._writer.stop(WRITER_WAIT_S)
        self._reader.close()
        self._db.close()

    # -- the writer thread ---------------------------------------------------------------------

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` on the writer thread, awaited: for writes that read nothing the loop
        changes (reserve, add_order of an order nobody else holds yet, probe), and for reads too
        long for the loop (last_steps, alarm_page), which use the writer's connection."""
        return await self._writer.run(call, *args)

    async def commit(self, rows: Rows) -> int | None:
        """`rows` committed in one transaction on the writer thread; the row id of the first
        statement (an insert's). Raises JournalUnavailable as the synchronous writes do."""
        return await self._writer.commit(rows)  # type: ignore[no-any-return]

    def _execute(self, rows: Rows) -> int | None:
        return self._execute_group([rows])[0]

    def _execute_group(self, writes: list[Rows]) -> list[int | None]:
        """Several writes in one transaction (the writer's group commit); each one's first row id."""
        firsts: list[int | None] = []
        with _Transaction(self._db, self.path) as db:
            for rows in writes:
                first = None
                for i, (sql, params, many) in enumerate(rows):
                    cursor = db.executemany(sql, params) if many else db.execute(sql, params)
                    if i == 0:
                        first = cursor.lastrowid
                firsts.append(first)
        return firsts

    def probe(self) -> None:
        """One small write, committed: raises JournalUnavailable while the journal cannot be written."""
        self._execute([("INSERT OR REPLACE INTO counters VALUES ('probe', 0)", (), False)])

    # -- writes: the rows of each (built by the caller's thread), and each committed at once --------

    def add_order(self, order: Order, event: OrderEvent) -> None:
        self._execute(self.add_order_rows(order, event))

    def save_order(self, order: Order, event: OrderEvent) -> None:
        self._execute(self.save_order_rows(order, event))

    def begin_step(self, order: Order, unit: Unit, step: Step, event: OrderEvent | None) -> None:
        step.id = self._execute(self.begin_step_rows(order, unit, step, event))

    def finish_step(self, step: Step) -> None:
        self._execute(self.finish_step_rows(step))

    def close_step(self, order: Order, unit: Unit, step: Step, events: list[OrderEvent]) -> None:
        self._execute(self.close_step_rows(order, unit, step, events))

    add_order_rows = staticmethod(add_order_rows)
    save_order_rows = staticmethod(save_order_rows)
    begin_step_rows = staticmethod(begin_step_rows)
    finish_step_rows = staticmethod(finish_step_rows)
    close_step_rows = staticmethod(close_step_rows)
    replace_order_rows = staticmethod(replace_order_rows)
    clear_order_rows = staticmethod(clear_order_rows)

    # -- audit: queued on the loop, written in batches by the writer ---------------------------

    def add_audit(self, event: str, user: str, thumbprint: str, outcome: str, channel: str = "") -> None:
        """Queue one audit record (session, login, order, write); the writer thread commits every
        record queued in one transaction. Every field is clipped: a client must not be able to
        grow the journal with what it sends."""
        row = (
            datetime.now(UTC).isoformat(), clip(event, 32), clip(user, 128), clip(thumbprint, 64),
            clip(outcome, AUDIT_OUTCOME_CHARS), clip(channel, 128),
        )  # fmt: skip
        self._audit.add(row)

    @property
    def audit_rows_lost(self) -> int:
        """Audit records only logged: the journal could not take them."""
        return self._audit.lost

    def load_audit(self, limit: int = 1000) -> list[tuple[str, str, str, str, str, str]]:
        """The newest `limit` records, oldest first, once every record queued so far is written."""
        if not self._closed:
            self._audit.written(WRITER_WAIT_S)
        return audit_rows(self._reader, limit)

    def reserve(self, units: int) -> tuple[int, int]:
        """The next accept index and the first of `units` fresh unit serials, both unique for the
        life of the journal, in one transaction: a new order's first write. JournalSpaceLow if
        the disk is down to the space kept for the orders under way."""
        self.space.check()
        with _Transaction(self._db, self.path) as db:
            return self._bump(db, "accept_index", 1, start=1), self._bump(
                db, "unit_serial", units, start=100001
            )

    def prune(self, before: datetime, stations: Collection[str], cursor: Cursor) -> Pruned:
        """One batch of retention (retention.py), in a transaction of its own: on the writer thread."""
        with _Transaction(self._db, self.path) as db:
            return prune_batch(db, before.isoformat(), stations, cursor)

    def pruned_at(self, order_id: str) -> datetime | None:
        """When `order_id` finished, if retention has removed it since: its id stays taken."""
        return _dt(pruned_at(self._reader, order_id))

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, count: int, *, start: int) -> int:
        row = db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        first = start if row is None else row["value"]
        db.execute("INSERT OR REPLACE INTO counters VALUES (?,?)", (name, first + count))
        return int(first)

    # -- reads ------------------------------------------------------------------------------

    def load_order(self, order_id: str) -> Order | None:
        row = self._reader.execute("SELECT * FROM orders WHERE order_id=?", (order_id,)).fetchone()
        return None if row is None else self._order(row)

    def load_unfinished(self) -> list[Order]:
        rows = self._reader.execute(
            "SELECT * FROM orders WHERE state NOT IN (?,?,?) ORDER BY accept_index",
            (OrderState.COMPLETED, OrderState.FAULTED, OrderState.CANCELLED),
        ).fetchall()
        orders = [self._order(row) for row in rows]
        # A cancelled or faulted order may still have a step on a PLC to settle.
        rows = self._reader.execute(
            "SELECT DISTINCT o.* FROM orders o JOIN steps s USING (order_id)"
            " WHERE o.state IN (?,?) AND s.phase != ? ORDER BY o.accept_index",
            (OrderState.FAULTED, OrderState.CANCELLED, StepPhase.CLOSED),
        ).fetchall()
        return orders + [self._order(row) for row in rows]

    def jobs_ended_since(self, since: datetime, limit: int) -> list[Order]:
        """The newest `limit` orders finished since `since` and not cleared, oldest first: the
        ended jobs of the job order list."""
        rows = self._reader.execute(
            "SELECT * FROM orders WHERE completed_at >= ? AND order_id NOT IN (SELECT order_id FROM cleared)"
            " ORDER BY completed_at DESC LIMIT ?",
            (since.isoformat(), limit),
        ).fetchall()
        return [self._order(row) for row in reversed(rows)]

    def is_cleared(self, order_id: str) -> bool:
        return (
            self._reader.execute("SELECT 1 FROM cleared WHERE order_id=?", (order_id,)).fetchone() is not None
        )

    def finished_since(self, since: datetime) -> list[tuple[str, str, datetime]]:
        """(order id, product, when it finished) of the orders finished since `since`, oldest first:
        what the OPC UA face lists at start without loading the orders."""
        rows = self._reader.execute(
            "SELECT order_id, product, completed_at FROM orders WHERE completed_at >= ?"
            " ORDER BY completed_at",
            (since.isoformat(),),
        ).fetchall()
        return [(r[0], r[1], datetime.fromisoformat(r[2])) for r in rows]

    def load_events(self, order_id: str) -> list[OrderEvent]:
        rows = self._reader.execute(
            "SELECT * FROM events WHERE order_id=? ORDER BY id", (order_id,)
        ).fetchall()
        return [
            OrderEvent(
                r["order_id"],
                OrderState(r["state"]),
                datetime.fromisoformat(r["at"]),
                r["station"],
                r["unit_index"],
                r["result_code"],
                r["message"],
            )
            for r in rows
        ]

    def last_steps(self, stations: Collection[str]) -> tuple[list[Step], list[Step]]:
        """Each station's newest step, and its newest step that ended: what a restarted OPC UA face
        shows as the station's Parameters, and as its Results and LastCycleTime. By the
        (station, id) index, newest first: a long journal costs no more than a short one. On the
        writer thread (`run`), with its connection: the loop's reader is the loop's alone."""
        newest = "SELECT * FROM steps WHERE station=? {} ORDER BY id DESC LIMIT 1"
        queries = (newest.format(""), newest.format("AND finished_at IS NOT NULL"))
        begun: list[Step] = []
        ended: list[Step] = []
        for station in stations:
            for found, query in zip((begun, ended), queries, strict=True):
                row = self._db.execute(query, (station,)).fetchone()
                if row is not None:
                    found.append(_step(row))
        return begun, ended

    def last_seq(self, station: str) -> int | None:
        row = self._reader.execute(
            "SELECT seq FROM steps WHERE station=? ORDER BY id DESC LIMIT 1", (station,)
        ).fetchone()
        return None if row is None else int(row["seq"])

    def _order(self, row: sqlite3.Row) -> Order:
        order = Order(
            order_id=row["order_id"],
            product=row["product"],
            options=json.loads(row["options"]),
            quantity=row["quantity"],
            priority=row["priority"],
            state=OrderState(row["state"]),
            current_station=row["current_station"],
            fault_station=row["fault_station"],
            result_code=row["result_code"],
            created_at=datetime.fromisoformat(row["created_at"]),
            completed_at=_dt(row["completed_at"]),
            accept_index=row["accept_index"],
            client=row["client"],
        )
        for u in self._reader.execute(
            "SELECT * FROM units WHERE order_id=? ORDER BY unit_index", (order.order_id,)
        ).fetchall():
            parameters = json.loads(u["parameters"]) if u["parameters"] else {}
            order.units.append(
                Unit(
                    u["order_id"],
                    u["unit_index"],
                    u["serial"],
                    u["next_step"],
                    UnitState(u["state"]),
                    parameters,
                )
            )
        for s in self._reader.execute("SELECT * FROM steps WHERE order_id=? ORDER BY id", (order.order_id,)):
            order.steps.append(_step(s))
        return order


def _step(s: sqlite3.Row) -> Step:
    results: Any = None if s["results"] is None else json.loads(s["results"])
    return Step(
        order_id=s["order_id"],
        unit_index=s["unit_index"],
        route_index=s["route_index"],
        station=s["station"],
        seq=s["seq"],
        parameters=json.loads(s["parameters"]),
        started_at=datetime.fromisoformat(s["started_at"]),
        phase=StepPhase(s["phase"]),
        finished_at=_dt(s["finished_at"]),
        results=results,
        result_code=s["result_code"],
        id=s["id"],
    )


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error; a database that cannot be written
    (disk full, I/O error, read-only) raises JournalUnavailable with SQLite's reason."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise JournalUnavailable(self._path, str(exc)) from exc
        return self._db

    def __exit__(self, exc_type: object, exc: object, _tb: object) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
                return
        except sqlite3.DatabaseError as failed:  # a COMMIT that could not write leaves the transaction open
            self._rollback()
            raise JournalUnavailable(self._path, str(failed)) from failed
        self._rollback()
        if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.IntegrityError | sqlite3.ProgrammingError
        ):
            raise JournalUnavailable(self._path, str(exc)) from exc

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
