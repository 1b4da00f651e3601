"""The scanner's fixed-rate schedule on a fake clock, supervision of background work, the
history store's bounded queue, and the heap settled after start-up."""

from __future__ import annotations

import asyncio
import gc
import itertools
import sqlite3
import weakref
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua
from structlog.testing import capture_logs

from bridge.lifecycle import settle_heap
from bridge.modbus.scanner import Schedule
from bridge.opcua.history_store import HistoryStore
from bridge.supervise import supervised


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_schedule_keeps_its_rate_whatever_each_poll_costs():
    clock = FakeClock()
    schedule = Schedule(0.1, clock)
    starts = []
    for cost in [0.03, 0.07, 0.01, 0.09, 0.05] * 20:  # polls of varying cost, never over the period
        clock.now += schedule.wait_s()
        schedule.start()
        starts.append(clock.now)
        clock.now += cost
    assert schedule.missed == 0
    assert schedule.done == 100
    assert starts[-1] - starts[0] == pytest.approx(9.9)  # 99 periods: no drift
    assert all(abs((b - a) - 0.1) < 1e-9 for a, b in itertools.pairwise(starts))


def test_a_poll_that_overruns_counts_the_missed_due_times_and_never_queues_them():
    clock = FakeClock()
    schedule = Schedule(0.1, clock)
    clock.now += schedule.wait_s()
    schedule.start()
    clock.now += 0.35  # one slow poll: the due times at +0.1 and +0.2 passed while it ran
    assert schedule.wait_s() == 0
    schedule.start()  # this poll serves +0.3, late; +0.1 and +0.2 are missed, not made up
    assert schedule.missed == 2
    assert schedule.wait_s() == pytest.approx(0.05)  # back on the grid: next due at +0.4
    clock.now += schedule.wait_s()
    schedule.start()
    assert (schedule.done, schedule.missed) == (3, 2)


def test_schedules_of_one_period_share_their_due_times_whenever_they_start():
    clock = FakeClock()
    first = Schedule(0.1, clock)
    assert first.wait_s() == 0  # the first poll at once
    first.start()
    clock.now += 0.037  # a second station's scanner starts a little later
    second = Schedule(0.1, clock)
    assert second.wait_s() == 0
    second.start()
    for _ in range(20):  # from then on due together: one wake-up for both
        assert first.next_due == second.next_due
        clock.now += first.wait_s()
        assert second.wait_s() == 0
        first.start()
        second.start()
    assert (first.done, first.missed, second.done, second.missed) == (21, 0, 21, 0)


async def test_a_task_that_raises_is_logged_and_restarted():
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"bug {runs}")
        await asyncio.Event().wait()  # then runs until cancelled

    with capture_logs() as logs:
        task = asyncio.create_task(supervised("flaky", flaky, restart_after_s=0.01))
        async with asyncio.timeout(5):
            while runs < 3:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failures = [e for e in logs if e["event"] == "task_failed"]
    assert [(e["task"], e["restarts"]) for e in failures] == [("flaky", 1), ("flaky", 2)]


async def test_the_history_queue_is_bounded_and_counts_what_it_dropped(tmp_path):
    store = HistoryStore(
        tmp_path / "h.sqlite", retention_s={"ns=1;s=a": 3600.0}, max_queued_rows=100, batch_s=0
    )
    store.add([(1, 1000.0 + i, i, ua.VariantType.Int32.value, 0) for i in range(250)])
    assert store.dropped_rows == 150  # queued before the writer ran: the oldest went
    await store.init()
    try:
        assert store.key_of("ns=1;s=a") == 1  # the first node of a fresh file
        async with asyncio.timeout(5):
            while store.stored_rows < 100:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.01)
        start = datetime.fromtimestamp(1000, UTC)
        values, _ = await store.read_node_history(
            ua.NodeId.from_string("ns=1;s=a"), start, start + timedelta(seconds=1000), 0
        )
        assert [v.Value.Value for v in values] == list(range(150, 250))  # the newest were kept
    finally:
        await store.stop()


async def test_a_batch_larger_than_one_insert_is_stored_whole_with_its_types(tmp_path):
    """Rows go in as multi-row INSERTs of 100 (bridge/opcua/history_store.py): 250 rows are three
    statements, and every value comes back as the type it went in."""
    store = HistoryStore(tmp_path / "h.sqlite", retention_s={"ns=1;s=a": 3600.0}, batch_s=0)
    kinds = [7, 2.5, "text", None, True]
    store.add([(1, 1000.0 + i, kinds[i % 5], ua.VariantType.Int32.value, 0) for i in range(250)])
    await store.init()
    try:
        async with asyncio.timeout(5):
            while store.stored_rows < 250:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.01)
        with sqlite3.connect(store.path) as db:
            stored = db.execute("SELECT t, value FROM history ORDER BY t").fetchall()
        assert stored == [(1000.0 + i, [7, 2.5, "text", None, 1][i % 5]) for i in range(250)]
    finally:
        await store.stop()


async def test_a_batch_is_stored_in_key_order_and_the_later_of_two_rows_for_one_time_wins(tmp_path):
    """The writer sorts a batch by (node, time) before it inserts it (bridge/opcua/history_store.py)."""
    nodes = {"ns=1;s=a": 3600.0, "ns=1;s=b": 3600.0}
    store = HistoryStore(tmp_path / "h.sqlite", retention_s=nodes, batch_s=0)
    await store.init()
    try:
        a, b = store.key_of("ns=1;s=a"), store.key_of("ns=1;s=b")
        int32 = ua.VariantType.Int32.value
        scans = [(key, 1000.0 + i, i, int32, 0) for i in range(3) for key in (b, a)]  # interleaved
        store.add([*scans, (a, 1001.0, None, int32, 0x80000000), (a, 1001.0, "again", int32, 0)])
        async with asyncio.timeout(5):
            while store.stored_rows < 8:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.01)
        with sqlite3.connect(store.path) as db:
            stored = db.execute("SELECT node, t, value FROM history ORDER BY node, t").fetchall()
        assert stored == [
            (a, 1000.0, 0), (a, 1001.0, "again"), (a, 1002.0, 2),
            (b, 1000.0, 0), (b, 1001.0, 1), (b, 1002.0, 2),
        ]  # fmt: skip
    finally:
        await store.stop()


async def test_history_is_pruned_per_node_on_its_retention(tmp_path):
    store = HistoryStore(
        tmp_path / "h.sqlite", retention_s={"ns=1;s=short": 10.0, "ns=1;s=long": 1000.0}, batch_s=0
    )
    await store.init()
    try:
        now = datetime.now(UTC).timestamp()
        store.add(
            [
                (n, now - age, 1.0, ua.VariantType.Double.value, 0)
                for n in (store.key_of("ns=1;s=short"), store.key_of("ns=1;s=long"))
                for age in (500, 5)
            ]
        )
        async with asyncio.timeout(5):
            while store.stored_rows < 4:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.01)
        assert store._prune(now) == 1  # only the short-lived node's old row
    finally:
        await store.stop()


def test_change_detection_passes_on_only_what_differs_from_the_last_poll():
    from bridge.opcua.station_nodes import Polled, changed_fields

    plan = {n: Polled(n, None, n, None, None, None, 0, False, None, 0.0, None) for n in ("a", "b", "c")}
    before = {"a": 1, "b": 2.5, "c": "x"}
    assert changed_fields(plan, before, {}, None, {}) == list(plan.values())  # no last poll: everything
    assert changed_fields(plan, before, {}, before, {}) == []  # the same poll again
    assert changed_fields(plan, dict(before), {}, before, {}) == []  # a new poll, equal values
    assert [e.name for e in changed_fields(plan, {**before, "b": 2.6}, {}, before, {})] == ["b"]
    doubt = {"c": object()}
    assert [e.name for e in changed_fields(plan, dict(before), doubt, before, {})] == ["c"]  # doubt came
    assert [e.name for e in changed_fields(plan, dict(before), {}, before, doubt)] == ["c"]  # doubt went
    nan = {**before, "a": float("nan")}
    assert [e.name for e in changed_fields(plan, dict(nan), {}, nan, {})] == ["a"]  # NaN: never "the same"
    # told which fields the link decoded anew, only those are compared (and kept if they differ)
    now = {**before, "a": 2, "b": 2.6}
    assert [e.name for e in changed_fields(plan, now, {}, before, {}, known=["a", "c"])] == ["a"]
    assert [e.name for e in changed_fields(plan, now, doubt, before, {}, known=[])] == ["c"]


class _Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_a_settled_heap_is_out_of_the_collectors_sight_and_later_cycles_are_still_collected():
    threshold = gc.get_threshold()
    built_at_start = [{"node": i} for i in range(10_000)]  # stands for the address space
    try:
        with capture_logs() as logs:
            frozen = settle_heap()
        assert frozen >= len(built_at_start)
        settled = {"event": "heap_settled", "frozen_objects": frozen, "full_collection_after": 100}
        assert logs == [{**settled, "log_level": "info"}]
        assert gc.get_threshold()[2] == 100
        assert not any(o is built_at_start for o in gc.get_objects())  # a full collection skips it
        later = _Cyclic()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None  # garbage made after start-up is collected as before
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
