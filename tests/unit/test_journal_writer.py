"""The journal's writer thread: writes committed off the loop in the order given, what comes at once
committed together, one bad write failing only its own caller; audit records batched."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from bridge.domain.model import utcnow
from bridge.errors import JournalUnavailable
from bridge.journal import SqliteJournal


def _event_rows(order_id: str) -> list:
    """One write of one events row: enough to see what was committed, and in what order."""
    return [
        (
            "INSERT INTO events (order_id, state, station, unit_index, result_code, message, at)"
            " VALUES (?,?,?,?,?,?,?)",
            (order_id, "queued", None, None, None, "", utcnow().isoformat()),
            False,
        )
    ]


@pytest.fixture
def journal(tmp_path):
    journal = SqliteJournal(tmp_path / "journal.sqlite")
    yield journal
    journal.close()


async def test_writes_that_come_at_once_commit_together_in_order_and_off_the_loop(journal):
    groups: list[int] = []
    threads: set[str] = set()
    group = journal._execute_group

    def counted(writes):
        groups.append(len(writes))
        threads.add(threading.current_thread().name)
        return group(writes)

    journal._writer._group = counted
    ids = await asyncio.gather(*(journal.commit(_event_rows(f"O-{i}")) for i in range(50)))
    assert ids == sorted(ids)  # committed in the order handed over
    assert sum(groups) == 50
    assert len(groups) < 50  # some went together
    assert threads == {"journal-writer"}
    rows = journal._reader.execute("SELECT order_id FROM events ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [f"O-{i}" for i in range(50)]


async def test_a_write_that_fails_fails_only_its_own_caller(journal):
    bad = [("INSERT INTO no_such_table VALUES (1)", (), False)]
    results = await asyncio.gather(
        journal.commit(_event_rows("A")), journal.commit(bad), journal.commit(_event_rows("B")),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[0], int)
    assert isinstance(results[1], JournalUnavailable | sqlite3.Error)
    assert isinstance(results[2], int)
    rows = journal._reader.execute("SELECT order_id FROM events ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["A", "B"]


async def test_audit_records_are_queued_and_written_in_batches(journal):
    before = journal._reader.execute("SELECT count(*) FROM audit").fetchone()[0]
    for i in range(200):
        journal.add_audit("login", f"user{i}", "", "refused")
    records = journal.load_audit(500)  # waits for what is queued
    assert len(records) - before == 200
    assert [r[2] for r in records[-200:]] == [f"user{i}" for i in range(200)]
    assert journal.audit_rows_lost == 0


async def test_a_cancelled_caller_leaves_the_write_done_and_the_writer_going(journal):
    task = asyncio.create_task(journal.commit(_event_rows("C")))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await journal.commit(_event_rows("D"))  # the writer still works
    rows = journal._reader.execute("SELECT order_id FROM events ORDER BY id").fetchall()
    assert [r[0] for r in rows][-1] == "D"
