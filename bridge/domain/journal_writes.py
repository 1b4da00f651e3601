"""What the engine does while its journal cannot be written: every journal write comes before the
PLC action it records, so a write that fails is retried where it stands, admission is refused
with the reason meanwhile, and a probe finds when the journal takes writes again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from bridge.domain.ports import OrderJournal, Rows
from bridge.errors import JournalUnavailable

log = structlog.get_logger(__name__)


class JournalWrites:
    """Mixed into LineEngine; the names declared here are the engine's."""

    journal: OrderJournal
    settings: Any  # EngineSettings
    _journal_error: JournalUnavailable | None
    _tasks: list[asyncio.Task[None]]
    _notify: Callable[[], None]

    async def _journaled(self, rows_of: Callable[..., Rows], *args: Any) -> int | None:
        """The rows `rows_of(*args)` committed (off the loop), however long the journal takes to
        become writable again; the first row's id.

        Every journal write comes before the PLC action it records (docs/handshake.md), so a
        write that waits here holds the step exactly where it is, and the same write, retried,
        commits what memory already holds. Meanwhile admission is refused with the reason."""
        while True:
            try:
                row_id = await self.journal.commit(rows_of(*args))
            except JournalUnavailable as exc:
                self._journal_failed(exc)
                await asyncio.sleep(self.settings.journal_retry_s)
                continue
            if self.journal_fault is not None:
                self._journal_recovered()
            return row_id

    @property
    def journal_fault(self) -> str | None:
        """Why the line stands while the journal cannot be written, else None."""
        error = self._journal_error
        if error is None:
            return None
        return f"the journal cannot be written ({error.reason}): the line stands until it can"

    def _journal_failed(self, exc: JournalUnavailable) -> None:
        if self.journal_fault is None:
            log.error("journal_unavailable", path=str(exc.path), reason=exc.reason)
            self._start_journal_probe()
        self._journal_error = exc
        self._notify()

    def _journal_recovered(self) -> None:
        log.warning("journal_recovered", was=self.journal_fault)
        self._journal_error = None
        self._notify()

    def _start_journal_probe(self) -> None:
        """Admission resumes when a write succeeds; with no step under way to retry one, a probe
        writes instead (an idle line must start taking orders again by itself too)."""
        if any(t.get_name() == "journal-probe" and not t.done() for t in self._tasks):
            return

        async def probe() -> None:
            while self.journal_fault is not None:
                await asyncio.sleep(self.settings.journal_retry_s)
                try:
                    await self.journal.run(self.journal.probe)
                except JournalUnavailable:
                    continue
                self._journal_recovered()

        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(probe(), name="journal-probe"))
