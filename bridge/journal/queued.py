"""Records queued on the loop and written by the journal's writer thread in batches: audit and alarm
history. The loop never waits for them; a full queue loses its oldest record, counted (the log
line of each keeps it). Records the journal cannot take (a full disk) stay queued, within the same
bound, and go with the next write, read or close once it can: an alarm raised because the disk
was full is in the alarm history when space returns."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from bridge.errors import JournalUnavailable
from bridge.journal.rows import Rows
from bridge.journal.writer import WriterThread

log = structlog.get_logger(__name__)


class QueuedRows:
    def __init__(
        self, name: str, sql: str, limit: int, writer: WriterThread, execute: Callable[[Rows], Any]
    ) -> None:
        self.name, self._sql, self._limit = name, sql, limit
        self._writer, self._execute = writer, execute
        self._rows: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()  # filled on the loop, emptied by the writer
        self._flush_due = False
        self.lost = 0  # records only logged: the journal could not take them
        self.closed = False
        self._failing: str | None = None  # why the last write failed, until one succeeds

    def add(self, row: tuple[Any, ...]) -> None:
        with self._lock:
            self._rows.append(row)
            self._trim()
            if self._flush_due:
                return
            self._flush_due = True
        if not self.closed:  # else close() wrote what was queued
            self._writer.call(self.flush)

    def flush(self) -> None:
        """On the writer thread: every record queued, in one transaction."""
        with self._lock:
            rows, self._flush_due = list(self._rows), False
            self._rows.clear()
        if not rows:
            return
        try:
            self._execute([(self._sql, rows, True)])
        except JournalUnavailable as exc:  # kept for the next try; the work goes on
            if self.closed:  # no next try: the log lines keep them
                self.lost += len(rows)
                log.error("rows_not_stored", table=self.name, reason=exc.reason, lost_so_far=self.lost)
            else:
                self._hold(rows, exc.reason)
            return
        if self._failing is not None:
            log.info("rows_stored_late", table=self.name, rows=len(rows), lost_so_far=self.lost)
            self._failing = None

    def _hold(self, rows: list[tuple[Any, ...]], reason: str) -> None:
        """`rows` back at the head of the queue, before any added since, the oldest lost beyond the bound."""
        with self._lock:
            self._rows.extendleft(reversed(rows))
            over = self._trim()
            held = len(self._rows)
        if self._failing != reason or over:  # once per outage, and whenever records are lost
            log.error("rows_not_stored", table=self.name, reason=reason, held=held, lost_so_far=self.lost)
        self._failing = reason

    def _trim(self) -> int:
        """Under the lock: the oldest records beyond the bound lost, counted; how many."""
        over = max(0, len(self._rows) - self._limit)
        for _ in range(over):
            self._rows.popleft()
        self.lost += over
        return over

    def written(self, timeout_s: float) -> None:
        """Return once every record queued so far is written (for a reader, and close())."""
        self._writer.call(self.flush).result(timeout=timeout_s)
