"""SQLite (WAL) implementation of the order journal.

Each public method is one transaction, committed before it returns: the engine acknowledges
nothing (to a client or to a PLC) that is not on disk. WAL with synchronous=NORMAL survives a
killed process; use synchronous="FULL" to survive a power cut as well, at some cost per commit.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.domain.model import Order, OrderEvent, OrderState, Step, StepPhase, Unit, UnitState
from bridge.errors import ConfigurationError, JournalUnavailable
from bridge.limits import AUDIT_OUTCOME_CHARS, clip

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    options TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    current_station TEXT,
    fault_station TEXT,
    result_code INTEGER,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    accept_index INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_open ON orders(state);
CREATE TABLE IF NOT EXISTS units (
    order_id TEXT NOT NULL REFERENCES orders(order_id),
    unit_index INTEGER NOT NULL,
    serial INTEGER NOT NULL UNIQUE,
    next_step INTEGER NOT NULL,
    state TEXT NOT NULL,
    parameters TEXT,
    PRIMARY KEY (order_id, unit_index)
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    unit_index INTEGER NOT NULL,
    route_index INTEGER NOT NULL,
    station TEXT NOT NULL,
    seq INTEGER NOT NULL,
    parameters TEXT NOT NULL,
    phase TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    results TEXT,
    result_code INTEGER,
    UNIQUE (order_id, unit_index, route_index)
);
CREATE INDEX IF NOT EXISTS steps_station ON steps(station, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    state TEXT NOT NULL,
    station TEXT,
    unit_index INTEGER,
    result_code INTEGER,
    message TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    user TEXT NOT NULL,
    thumbprint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT ''
);
"""


def check_database(db: sqlite3.Connection) -> list[str]:
    """SQLite's own verdict on a journal: [] when sound, else what is wrong (quick_check)."""
    rows = [row[0] for row in db.execute("PRAGMA quick_check(20)").fetchall()]
    return [] if rows == ["ok"] else rows


def check_journal(path: Path) -> tuple[list[str], dict[str, int]]:
    """A journal file checked without changing it (read-only): its problems, and what it holds."""
    if not path.is_file():
        return [f"{path}: no such file"], {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"{path}: {exc}"], {}
    try:
        problems = check_database(db)
        if problems:
            return problems, {}
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = sorted({"orders", "units", "steps", "events", "audit"} - tables)
        if missing:
            return [f"not a linebridge journal: no table {', '.join(missing)}"], {}
        counts = {
            "orders": db.execute("SELECT count(*) FROM orders").fetchone()[0],
            "unfinished": db.execute(
                "SELECT count(*) FROM orders WHERE state NOT IN ('completed', 'faulted', 'cancelled')"
            ).fetchone()[0],
            "steps": db.execute("SELECT count(*) FROM steps").fetchone()[0],
            "audit_rows": db.execute("SELECT count(*) FROM audit").fetchone()[0],
        }
        return [], counts
    except sqlite3.Error as exc:
        return [str(exc)], {}
    finally:
        db.close()


def _remedy(path: Path, reason: str) -> str:
    """One message for a journal the bridge cannot use: the file, SQLite's reason, what to do."""
    lowered = reason.lower()
    if "readonly" in lowered or "unable to open" in lowered or "permission" in lowered:
        todo = (f"the bridge may not write {path.parent}: give its user write access to that folder"
                " and the file, or choose another --data-dir")  # fmt: skip
    elif "full" in lowered or "no space" in lowered:
        todo = f"the disk holding {path.parent} is full: free space there, then start again"
    else:
        todo = (f"the file is damaged: move it aside and keep it for recovery (a new journal starts"
                f" empty), or restore it from a backup; `linebridge journal check {path}` says whether a"
                " journal is sound")  # fmt: skip
    return f"journal {path} cannot be used: {reason}. {todo}. Nothing was changed."


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class SqliteJournal:
    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        """Open (or create) the journal; one that is damaged or may not be written stops here with
        ConfigurationError naming the file and what to do, before anything in it is changed."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(_remedy(self.path, str(exc))) from None
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
        except sqlite3.Error as exc:
            self._db.close()
            raise ConfigurationError(_remedy(self.path, str(exc))) from None

    def _migrate(self) -> None:
        """Bring a journal written by an earlier version up to this schema (columns only added)."""
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(units)")}
        if "parameters" not in columns:
            self._db.execute("ALTER TABLE units ADD COLUMN parameters TEXT")
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(audit)")}
        if "channel" not in columns:
            self._db.execute("ALTER TABLE audit ADD COLUMN channel TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        self._db.close()

    def probe(self) -> None:
        """One small write, committed: raises JournalUnavailable while the journal cannot be written."""
        with _Transaction(self._db, self.path) as db:
            db.execute("INSERT OR REPLACE INTO counters VALUES ('probe', 0)")

    # -- writes, one transaction each --------------------------------------------------------

    def add_order(self, order: Order, event: OrderEvent) -> None:
        with _Transaction(self._db, self.path) as db:
            db.execute(
                "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    order.order_id,
                    order.product,
                    json.dumps(order.options),
                    order.quantity,
                    order.priority,
                    order.state,
                    order.current_station,
                    order.fault_station,
                    order.result_code,
                    _ts(order.created_at),
                    _ts(order.completed_at),
                    order.accept_index,
                ),
            )
            db.executemany(
                "INSERT INTO units (order_id, unit_index, serial, next_step, state, parameters)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (u.order_id, u.index, u.serial, u.next_step, u.state, json.dumps(u.parameters))
                    for u in order.units
                ],
            )
            self._event(db, event)

    def save_order(self, order: Order, event: OrderEvent) -> None:
        with _Transaction(self._db, self.path) as db:
            self._update_order(db, order)
            for unit in order.units:
                self._update_unit(db, unit)
            self._event(db, event)

    def begin_step(self, order: Order, unit: Unit, step: Step, event: OrderEvent | None) -> None:
        with _Transaction(self._db, self.path) as db:
            cursor = db.execute(
                "INSERT INTO steps (order_id, unit_index, route_index, station, seq, parameters, phase,"
                " started_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    step.order_id,
                    step.unit_index,
                    step.route_index,
                    step.station,
                    step.seq,
                    json.dumps(step.parameters),
                    step.phase,
                    _ts(step.started_at),
                ),
            )
            step.id = cursor.lastrowid
            self._update_order(db, order)
            self._update_unit(db, unit)
            if event is not None:
                self._event(db, event)

    def finish_step(self, step: Step) -> None:
        with _Transaction(self._db, self.path) as db:
            self._update_step(db, step)

    def close_step(self, order: Order, unit: Unit, step: Step, events: list[OrderEvent]) -> None:
        with _Transaction(self._db, self.path) as db:
            self._update_step(db, step)
            self._update_order(db, order)
            for u in order.units:  # a fault or cancel can settle sibling units too
                self._update_unit(db, u)
            for event in events:
                self._event(db, event)

    def add_audit(self, event: str, user: str, thumbprint: str, outcome: str, channel: str = "") -> None:
        """One audit record (session, login, order, write), committed at once. Every field is
        clipped: a client must not be able to grow the journal with what it sends."""
        with _Transaction(self._db, self.path) as db:
            db.execute(
                "INSERT INTO audit (at, event, user, thumbprint, outcome, channel) VALUES (?,?,?,?,?,?)",
                (
                    datetime.now(UTC).isoformat(),
                    clip(event, 32),
                    clip(user, 128),
                    clip(thumbprint, 64),
                    clip(outcome, AUDIT_OUTCOME_CHARS),
                    clip(channel, 128),
                ),
            )

    def load_audit(self, limit: int = 1000) -> list[tuple[str, str, str, str, str, str]]:
        rows = self._db.execute(
            "SELECT at, event, user, thumbprint, outcome, channel FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [tuple(row) for row in reversed(rows)]  # type: ignore[misc]

    def reserve(self, units: int) -> tuple[int, int]:
        """The next accept index and the first of `units` fresh unit serials, both unique for the
        life of the journal, in one transaction."""
        with _Transaction(self._db, self.path) as db:
            return self._bump(db, "accept_index", 1, start=1), self._bump(
                db, "unit_serial", units, start=100001
            )

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, count: int, *, start: int) -> int:
        row = db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        first = start if row is None else row["value"]
        db.execute("INSERT OR REPLACE INTO counters VALUES (?,?)", (name, first + count))
        return int(first)

    @staticmethod
    def _update_order(db: sqlite3.Connection, order: Order) -> None:
        db.execute(
            "UPDATE orders SET state=?, current_station=?, fault_station=?, result_code=?, completed_at=?"
            " WHERE order_id=?",
            (
                order.state,
                order.current_station,
                order.fault_station,
                order.result_code,
                _ts(order.completed_at),
                order.order_id,
            ),
        )

    @staticmethod
    def _update_unit(db: sqlite3.Connection, unit: Unit) -> None:
        db.execute(
            "UPDATE units SET next_step=?, state=? WHERE order_id=? AND unit_index=?",
            (unit.next_step, unit.state, unit.order_id, unit.index),
        )

    @staticmethod
    def _update_step(db: sqlite3.Connection, step: Step) -> None:
        db.execute(
            "UPDATE steps SET phase=?, finished_at=?, results=?, result_code=? WHERE id=?",
            (
                step.phase,
                _ts(step.finished_at),
                None if step.results is None else json.dumps(step.results),
                step.result_code,
                step.id,
            ),
        )

    @staticmethod
    def _event(db: sqlite3.Connection, event: OrderEvent) -> None:
        db.execute(
            "INSERT INTO events (order_id, state, station, unit_index, result_code, message, at)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                event.order_id,
                event.state,
                event.station,
                event.unit_index,
                event.result_code,
                event.message,
                _ts(event.at),
            ),
        )

    # -- reads ------------------------------------------------------------------------------

    def load_order(self, order_id: str) -> Order | None:
        row = self._db.execute("SELECT * FROM orders WHERE order_id=?", (order_id,)).fetchone()
        return None if row is None else self._order(row)

    def load_unfinished(self) -> list[Order]:
        rows = self._db.execute(
            "SELECT * FROM orders WHERE state NOT IN (?,?,?) ORDER BY accept_index",
            (OrderState.COMPLETED, OrderState.FAULTED, OrderState.CANCELLED),
        ).fetchall()
        orders = [self._order(row) for row in rows]
        # A cancelled or faulted order may still have a step on a PLC to settle.
        rows = self._db.execute(
            "SELECT DISTINCT o.* FROM orders o JOIN steps s USING (order_id)"
            " WHERE o.state IN (?,?) AND s.phase != ? ORDER BY o.accept_index",
            (OrderState.FAULTED, OrderState.CANCELLED, StepPhase.CLOSED),
        ).fetchall()
        return orders + [self._order(row) for row in rows]

    def load_finished_since(self, since: datetime) -> list[Order]:
        rows = self._db.execute(
            "SELECT * FROM orders WHERE completed_at >= ? ORDER BY accept_index", (since.isoformat(),)
        ).fetchall()
        return [self._order(row) for row in rows]

    def load_events(self, order_id: str) -> list[OrderEvent]:
        rows = self._db.execute("SELECT * FROM events WHERE order_id=? ORDER BY id", (order_id,)).fetchall()
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

    def last_seq(self, station: str) -> int | None:
        row = self._db.execute(
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
        )
        for u in self._db.execute(
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
        for s in self._db.execute("SELECT * FROM steps WHERE order_id=? ORDER BY id", (order.order_id,)):
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
