"""The order journal: embedded SQLite, committed before anything is acknowledged."""

from bridge.journal.sqlite import SqliteJournal

JOURNAL_FILE = "journal.sqlite"  # in the data directory

__all__ = ["JOURNAL_FILE", "SqliteJournal"]
