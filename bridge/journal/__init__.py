"""The order journal: embedded SQLite, committed before anything is acknowledged."""

from bridge.journal.sqlite import SqliteJournal

__all__ = ["SqliteJournal"]
