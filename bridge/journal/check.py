"""Whether a journal file is sound, and what to tell the engineer when it is not."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from bridge.journal.reads import open_read_only


def check_database(db: sqlite3.Connection) -> list[str]:
    """SQLite's own verdict on a journal: [] when sound, else what is wrong (quick_check)."""
    rows = [row[0] for row in db.execute("PRAGMA quick_check(20)").fetchall()]
    return [] if rows == ["ok"] else rows


def check_journal(path: Path) -> tuple[list[str], dict[str, int]]:
    """A journal file checked without changing it (read-only): its problems, and what it holds."""
    if not path.is_file():
        return [f"{path}: no such file"], {}
    try:
        db = open_read_only(path)
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
            "pruned": db.execute("SELECT count(*) FROM pruned").fetchone()[0] if "pruned" in tables else 0,
        }
        return [], counts
    except sqlite3.Error as exc:
        return [str(exc)], {}
    finally:
        db.close()


def remedy(path: Path, reason: str) -> str:
    """One message for a journal the bridge cannot use: the file, SQLite's reason, what to do."""
    lowered = reason.lower()
    if "readonly" in lowered or "unable to open" in lowered or "permission" in lowered:
        todo = (f"the bridge may not write {path.parent}: give its user write access to that folder"
                " and the file, or choose another --data-dir")  # fmt: skip
    elif "full" in lowered or "no space" in lowered or ("i/o error" in lowered and _disk_full(path.parent)):
        todo = f"the disk holding {path.parent} is full: free space there, then start again"
    else:
        todo = (f"the file is damaged: move it aside and keep it for recovery (a new journal starts"
                f" empty), or restore it from a backup; `linebridge journal check {path}` says whether a"
                " journal is sound")  # fmt: skip
    return f"journal {path} cannot be used: {reason}. {todo}. Nothing was changed."


def _disk_full(folder: Path) -> bool:
    """Whether `folder`'s disk is (all but) full: on one, SQLite opening a sound journal in WAL mode
    says "disk I/O error", and the remedy for a damaged file would send a sound one aside."""
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False
