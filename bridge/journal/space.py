"""Disk space kept for the orders under way: a new order is refused before the journal's disk is
full, so whatever fills it (an order flood, history, logs, another program) the steps already
accepted can still be journaled and finish (docs/engine.md, "Space kept for the orders under way")."""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from bridge.errors import JournalSpaceLow, amount_option

log = structlog.get_logger(__name__)


class DiskReserve:
    def __init__(self, folder: Path, keep_free_mb: float) -> None:
        self.folder = folder
        keep_mb = amount_option("journal_reserve_mb", keep_free_mb, "MiB, 0 or more")  # --config's unchecked
        self.keep_free_bytes = int(keep_mb * 2**20)
        self._low = False

    def room(self) -> tuple[int, int]:
        """Bytes free on the journal's disk, and bytes kept (at most a tenth of the file system, so
        a small one still takes orders)."""
        usage = shutil.disk_usage(self.folder)
        return usage.free, min(self.keep_free_bytes, usage.total // 10)

    def short(self) -> JournalSpaceLow | None:
        """The refusal a new order gets now if the disk holds less than the space kept, else None."""
        free, kept = self.room()
        return JournalSpaceLow(self.folder, free, kept) if free < kept else None

    def check(self) -> None:
        """Raise `short()`'s refusal, if any; the change logged once each way."""
        short = self.short()
        if (short is not None) != self._low:
            self._low = short is not None
            if short is not None:
                log.warning("journal_space_low", folder=str(self.folder), free=short.free, kept=short.kept)
            else:
                log.info("journal_space_recovered", folder=str(self.folder), free=self.room()[0])
        if short is not None:
            raise short
