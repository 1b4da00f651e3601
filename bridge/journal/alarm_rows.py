"""The alarm history's rows in the journal: one per change of an alarm, queued on the loop and
written in batches by the journal's writer thread, as the audit is; read back for `alarm list`,
a restart's take-up of acknowledged and shelved alarms, and OPC UA HistoryRead of events."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from bridge.domain.alarm_condition import AlarmState
from bridge.journal.queued import QueuedRows
from bridge.journal.reads import alarm_rows
from bridge.journal.schema import ALARM_COLUMNS
from bridge.journal.writer import WRITER_WAIT_S
from bridge.limits import AUDIT_OUTCOME_CHARS, clip


class AlarmRows:
    """The alarm part of `SqliteJournal`, which sets these four."""

    _alarms: QueuedRows
    _closed: bool
    _db: sqlite3.Connection  # the writer thread's connection
    _reader: sqlite3.Connection  # the loop's

    def add_alarm(self, alarm: AlarmState, what: str) -> None:
        self._alarms.add((
            _iso(alarm.changed_at), alarm.alarm_id, what,
            int(alarm.active), int(alarm.acked), int(alarm.confirmed), str(alarm.shelving),
            alarm.severity, alarm.limit, alarm.value, clip(alarm.message, AUDIT_OUTCOME_CHARS),
            clip(alarm.user, 128), clip(alarm.comment, AUDIT_OUTCOME_CHARS), alarm.unshelve_at,
        ))  # fmt: skip

    def load_alarms(self, alarm: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` changes (of one alarm, or all), oldest first, once all queued are written."""
        if not self._closed:
            self._alarms.written(WRITER_WAIT_S)
        return alarm_rows(self._reader, alarm, limit)

    def alarm_page(
        self, alarms: Collection[str] | None, low: float, high: float, ascending: bool, limit: int, after: int
    ) -> list[dict[str, Any]]:
        """Changes of `alarms` (None: all) between `low` and `high` (epoch s), past row `after` in
        the order asked, at most `limit`, each with its row `id`: a page of event history. On the
        writer thread (`run`), whose connection sees every batch written."""
        clauses = ["at >= ?", "at <= ?", "id > ?" if ascending else "id < ?"]
        args: list[Any] = [_iso(low), _iso(high), after]
        if alarms is not None:
            clauses.append(f"alarm IN ({','.join('?' * len(alarms))})")
            args += list(alarms)
        rows = self._db.execute(
            f"SELECT id, {ALARM_COLUMNS} FROM alarms WHERE {' AND '.join(clauses)}"
            f" ORDER BY id {'ASC' if ascending else 'DESC'} LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [dict(row) for row in rows]

    def last_alarms(self) -> dict[str, dict[str, Any]]:
        """Each alarm's newest row: what a restarted bridge takes up (acknowledged, confirmed, shelved)."""
        rows = self._reader.execute(
            f"SELECT {ALARM_COLUMNS} FROM alarms WHERE id IN (SELECT MAX(id) FROM alarms GROUP BY alarm)"
        ).fetchall()
        return {row["alarm"]: dict(row) for row in rows}


def _iso(epoch_s: float) -> str:
    """The `at` column's form (ISO 8601, UTC): what add_alarm writes and alarm_page's bounds."""
    return datetime.fromtimestamp(max(0.0, epoch_s), UTC).isoformat()
