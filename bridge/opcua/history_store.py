"""Telemetry history of our own, behind asyncua's HistoryRead.

asyncua historizes through one subscription per node and writes each value in its own task and
transaction (unbounded, one DELETE per value). Here the face hands over the values of a whole
scan at once: they wait in a bounded queue (a full one drops the oldest rows, counted), one writer
task stores each batch in one transaction in a worker thread, into one table keyed (and so ordered)
by node and time; pruning runs on a timer, and reads go through a second connection (WAL lets
them run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import sqlite3
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.server.history import HistoryStorageInterface

from bridge.lifecycle import cancel_and_wait
from bridge.supervise import start_supervised

log = structlog.get_logger(__name__)

Row = tuple[int, float, Any, int, int]  # node key (key_of), source time (epoch s), value, VariantType, status

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, node TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS history (node INTEGER NOT NULL, t REAL NOT NULL, value, vtype INTEGER NOT NULL,
                                    status INTEGER NOT NULL, PRIMARY KEY (node, t)) WITHOUT ROWID;
"""


# Rows per INSERT: sqlite3 lets go of the interpreter lock around each statement, and a statement
# per row had the writer thread and the event loop trade it per row (500 bound values; max 32,766).
_ROWS_PER_INSERT = 100
# A batch is stored in key order (node, time): scans interleave the nodes, and rows taken in key
# order fill each node's last page in one visit instead of hopping between a thousand pages, which
# overflowed SQLite's page cache at 10x100 (7.7 -> 2.7 us a row with 1,000 nodes; docs/telemetry.md).
_KEY = operator.itemgetter(0, 1)


@functools.lru_cache(maxsize=8)
def _insert_sql(rows: int) -> str:
    return "INSERT OR REPLACE INTO history VALUES " + ",".join(["(?,?,?,?,?)"] * rows)


class HistoryStore(HistoryStorageInterface):  # type: ignore[misc]
    def __init__(
        self,
        path: Path,
        *,
        retention_s: dict[str, float],
        max_queued_rows: int = 200_000,
        prune_every_s: float = 60.0,
        batch_s: float = 1.0,
        max_history_data_response_size: int = 10_000,
    ) -> None:
        super().__init__(max_history_data_response_size)
        self.path = path
        self.retention_s = retention_s  # per node id (its string form); only these are stored
        self.prune_every_s = prune_every_s
        self.batch_s = batch_s  # rows gather this long before they are written: fewer transactions
        self._keys: dict[str, int] = {}  # node id → its integer key in the table
        self.dropped_rows = 0
        self.write_error: str | None = None  # why the last batch could not be stored, until one is
        self.stored_rows = 0
        self._queue: deque[Row] = deque(maxlen=max_queued_rows)
        self._ready = asyncio.Event()
        self._writing = asyncio.Lock()  # one user of the writing connection at a time
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._write_db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None

    # -- life cycle ----------------------------------------------------------------------------

    async def init(self) -> None:
        def connect() -> tuple[sqlite3.Connection, sqlite3.Connection]:
            writer = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute("PRAGMA synchronous=NORMAL")
            # a multi-row INSERT OR REPLACE keeps a statement journal (the pages it may undo): in
            # memory, not a page write and a 4-byte write to a temporary file per touched page
            writer.execute("PRAGMA temp_store=MEMORY")
            writer.executescript(SCHEMA)
            writer.executemany(
                "INSERT OR IGNORE INTO nodes (node) VALUES (?)", [(n,) for n in self.retention_s]
            )
            self._keys.update(writer.execute("SELECT node, id FROM nodes").fetchall())
            return writer, sqlite3.connect(self.path, check_same_thread=False)

        self._write_db, self._read_db = await asyncio.to_thread(connect)
        self._tasks = []
        start_supervised(self._tasks, "history-writer", self._write_loop)
        start_supervised(self._tasks, "history-pruner", self._prune_loop)

    async def _off_loop(self, work: Any, *args: Any) -> Any:
        """`work(*args)` in a worker thread that a cancel cannot orphan: stop() waits for it before
        it closes the connection the thread is using."""
        future = asyncio.ensure_future(asyncio.to_thread(work, *args))
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(future)

    async def stop(self) -> None:
        """Store what is queued, then close."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        if self._queue and self._write_db is not None:
            try:
                async with self._writing:
                    await asyncio.to_thread(self._insert, self._take())
            except sqlite3.OperationalError as exc:  # a full disk at stop: those rows are lost, said
                log.error("history_rows_lost_at_stop", reason=str(exc))
        for db in (self._write_db, self._read_db):
            if db is not None:
                db.close()
        self._write_db = self._read_db = None

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return self._tasks

    # -- writing -------------------------------------------------------------------------------

    def add(self, rows: Iterable[Row]) -> None:
        """Queue a scan's rows (never blocks; a full queue forgets its oldest rows, counted)."""
        before = len(self._queue)
        rows = list(rows)
        self._queue.extend(rows)
        overflow = before + len(rows) - len(self._queue)
        if overflow > 0:
            if not self.dropped_rows:
                log.warning("history_queue_full", capacity=self._queue.maxlen)
            self.dropped_rows += overflow
        self._ready.set()

    def _take(self) -> list[Row]:
        rows = list(self._queue)
        self._queue.clear()
        return rows

    async def _write_loop(self) -> None:
        while True:
            await self._ready.wait()
            await asyncio.sleep(self.batch_s)
            self._ready.clear()
            rows = self._take()
            if not rows:
                continue
            try:
                async with self._writing:
                    await self._off_loop(self._insert, rows)
            except sqlite3.OperationalError as exc:  # a full disk: keep the rows (bounded), try again
                if self.write_error is None:
                    log.error("history_write_failed", path=str(self.path), reason=str(exc))
                self.write_error = str(exc)
                self.add(rows)  # back in the bounded queue: what does not fit is dropped, counted
                await asyncio.sleep(self.batch_s * 5)
                continue
            if self.write_error is not None:
                log.warning("history_write_recovered", path=str(self.path))
                self.write_error = None

    def key_of(self, node_id: str) -> int:
        """The integer key rows of `node_id` (one of `retention_s`) carry; known after init()."""
        return self._keys[node_id]

    def _insert(self, rows: list[Row]) -> None:
        rows.sort(key=_KEY)  # stable: of two rows for one node and time, the later still wins

        def insert(db: sqlite3.Connection) -> None:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                db.execute(_insert_sql(len(chunk)), [value for row in chunk for value in row])

        self._transaction(insert)
        self.stored_rows += len(rows)

    def _transaction(self, work: Any) -> Any:
        """`work(db)` in one transaction of the writing connection (callers take turns: _writing)."""
        db = self._write_db
        assert db is not None
        db.execute("BEGIN")
        try:
            result = work(db)
            db.execute("COMMIT")  # a COMMIT that cannot write (disk full) leaves the transaction open
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # (SQLite may have rolled back already)
                db.execute("ROLLBACK")
            raise
        return result

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.prune_every_s)
            try:
                async with self._writing:
                    removed = await self._off_loop(self._prune, time.time())
            except sqlite3.OperationalError as exc:  # a full disk: prune again next time
                log.warning("history_prune_failed", reason=str(exc))
                continue
            if removed:
                log.info("history_pruned", rows=removed)

    def _prune(self, now: float) -> int:
        def prune(db: sqlite3.Connection) -> int:
            delete = "DELETE FROM history WHERE node = ? AND t < ?"
            limits = [(self._keys[node], now - keep_s) for node, keep_s in self.retention_s.items()]
            return sum(db.execute(delete, limit).rowcount for limit in limits)

        removed: int = self._transaction(prune)
        return removed

    # -- asyncua's history storage interface -------------------------------------------------

    async def new_historized_node(self, node_id: ua.NodeId, period: timedelta | None, count: int = 0) -> None:
        """Unused: the face decides what is historized (the mapping's `history`)."""

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        """Unused: values arrive in batches through `add`."""

    async def read_node_history(
        self, node_id: ua.NodeId, start: datetime | None, end: datetime | None, nb_values: int
    ) -> tuple[list[ua.DataValue], datetime | None]:
        """asyncua's interface (paged reads go through history_read.PagedHistory)."""
        key = self.key(node_id.to_string())
        if key is None:
            return [], None
        epoch = ua.get_win_epoch()
        ascending = not (start is None or start == epoch)
        low = start.timestamp() if ascending and start is not None else 0.0
        high = end.timestamp() if end is not None and end != epoch else time.time() + 86400
        if low > high:
            low, high, ascending = high, low, False
        limit = min(nb_values or self.max_history_data_response_size, self.max_history_data_response_size)
        after = float("-inf") if ascending else float("inf")
        values, _ = await self.read_page(key, low, high, ascending, limit + 1, after)
        cont = values[limit].SourceTimestamp if len(values) > limit else None
        return values[:limit], cont

    async def recent(self, node_id: str, since: float, limit: int = 10_000) -> list[tuple[float, Any]] | None:
        """(time, value) of a node since `since` (epoch s), oldest first, at most `limit` (the
        newest): a trend's points. None for a node that keeps no history."""
        key = self.key(node_id)
        if key is None:
            return None
        rows = await asyncio.to_thread(self._select, key, since, time.time() + 1, False, limit, float("inf"))
        return [(t, value) for t, value, _vtype, _status in reversed(rows)]

    def key(self, node_id: str) -> int | None:
        """The table key of a historized node, or None for a node that keeps no history."""
        return self._keys.get(node_id) if node_id in self.retention_s else None

    async def read_page(
        self, key: int, low: float, high: float, ascending: bool, limit: int, after: float
    ) -> tuple[list[ua.DataValue], list[float]]:
        """Up to `limit` values of node `key` in [low, high] strictly past `after` (in the read's
        direction), and their times: a page and where the next one starts."""
        rows = await asyncio.to_thread(self._select, key, low, high, ascending, limit, after)
        values = [
            ua.DataValue(
                _variant(value, ua.VariantType(vtype)),
                StatusCode=ua.StatusCode(status),
                SourceTimestamp=datetime.fromtimestamp(t, UTC),
                ServerTimestamp=datetime.fromtimestamp(t, UTC),
            )
            for t, value, vtype, status in rows
        ]
        return values, [row[0] for row in rows]

    def _select(
        self, node: int, low: float, high: float, ascending: bool, limit: int, after: float
    ) -> list[Any]:
        assert self._read_db is not None
        order, past = ("ASC", ">") if ascending else ("DESC", "<")
        return self._read_db.execute(
            f"SELECT t, value, vtype, status FROM history WHERE node = ? AND t BETWEEN ? AND ? AND t {past} ?"
            f" ORDER BY t {order} LIMIT ?",
            (node, low, high, after, limit),
        ).fetchall()


def _variant(value: Any, vtype: ua.VariantType) -> ua.Variant:
    if value is None:
        return ua.Variant()
    if vtype == ua.VariantType.Boolean:  # SQLite keeps booleans as 0 and 1
        value = bool(value)
    elif vtype in (ua.VariantType.Float, ua.VariantType.Double):
        value = float(value)
    return ua.Variant(value, vtype)
