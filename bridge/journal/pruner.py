"""Journal retention as the bridge runs it: at start and then once an hour, a batch at a time on
the writer thread (so step commits go between batches), each pass that removed anything audited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import structlog

from bridge.domain.model import utcnow
from bridge.errors import JournalUnavailable
from bridge.journal.retention import Pruned
from bridge.journal.sqlite import SqliteJournal

log = structlog.get_logger(__name__)


class JournalPruner:
    def __init__(
        self,
        journal: SqliteJournal,
        retention_s: float,
        stations: Callable[[], Collection[str]],
        audit: Callable[[str, str, str, str], object],
        *,
        every_s: float = 3600.0,
    ) -> None:
        self.journal = journal
        self.retention_s = retention_s
        self.stations = stations  # the line's stations now (a mapping reload may change them)
        self.audit = audit
        self.every_s = every_s

    async def run(self) -> None:
        while True:
            await self.prune()
            await asyncio.sleep(self.every_s)

    async def prune(self, now: datetime | None = None) -> Pruned:
        """Everything older than the retention, as of `now`: what was removed (also when the
        journal failed part way: the batches committed stay removed, the rest waits for next time)."""
        before = (now or utcnow()) - timedelta(seconds=self.retention_s)
        done = Pruned()
        try:
            while True:
                done += await self.journal.run(
                    self.journal.prune, before, tuple(self.stations()), done.cursor
                )
                if done.cursor.done:
                    break
        except JournalUnavailable as exc:
            log.warning("journal_prune_failed", reason=exc.reason)
        if done.orders or done.audit or done.alarms:
            what = f"{done.orders} orders, {done.audit} audit records, {done.alarms} alarm changes"
            log.info("journal_pruned", orders=done.orders, audit=done.audit, alarms=done.alarms)
            self.audit(
                "journal_pruned",
                "linebridge",
                "",
                f"ok: removed {what} older than {before:%Y-%m-%d %H:%M} UTC",
            )
        return done
