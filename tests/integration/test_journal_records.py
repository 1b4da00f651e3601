"""What the journal keeps and hands out, against the real simulated line and the real SQLite file.

Retention: old finished orders leave the journal, their ids stay taken, and the line goes on
numbering its steps after them, also across a restart; audit and alarm history are trimmed too,
each alarm's last change kept. Export: `linebridge journal export` as a shell runs it, beside the
running bridge, a row per step with the unit's serial, parameters and results."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest

from bridge.domain.alarm_condition import AlarmState
from bridge.domain.model import OrderState
from bridge.errors import OrderRejected
from bridge.journal import retention
from bridge.journal.sqlite import SqliteJournal
from bridge.mapping import apply_deployment
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from tests.integration.orders import run_orders, until
from tests.integration.shell import cli

LATER = timedelta(days=3)


@pytest.fixture
async def line(ac_mapping):
    ports = dict.fromkeys(ac_mapping.stations, 0)
    async with SimulatedLine(ac_mapping, ports=ports, speed=0, seed=5) as line:
        yield line


def settings(tmp_path, **kw) -> BridgeSettings:
    return BridgeSettings(data_dir=tmp_path / "data", telemetry_interval_s=0, backoff_max_s=0.2, **kw)


def newest_step_orders(bridge: Bridge) -> set[str]:
    begun, _ = bridge.journal.last_steps(bridge.mapping.stations)
    return {step.order_id for step in begun}


async def test_old_orders_leave_the_journal_and_what_the_line_needs_stays(ac_mapping, line, tmp_path):
    mapping = apply_deployment(ac_mapping, line.endpoints())
    async with Bridge(mapping, settings(tmp_path, journal_retention_s=86_400)) as bridge:
        done = await run_orders(bridge, "R", 8)
        assert {o.state for o in done} == {OrderState.COMPLETED}
        stored = await bridge.engine.store_order(_request("R-stored"))  # open: no work started
        bridge.audit("order_submit", "alice", "", "ok R-0")
        held = newest_step_orders(bridge)
        seqs = {station: bridge.journal.last_seq(station) for station in mapping.stations}

        pruned = await bridge.pruner.prune(now=datetime.now(UTC) + LATER)

        gone = {o.order_id for o in done} - held
        assert gone, "eight orders over one route leave some that hold no station's newest step"
        assert pruned.orders == len(gone)
        assert pruned.audit == 1  # alice's
        for order_id in gone:
            assert bridge.get(order_id) is None
            assert bridge.journal.pruned_at(order_id) is not None
        for order_id in held | {stored.order_id}:
            assert bridge.get(order_id) is not None
        assert {s: bridge.journal.last_seq(s) for s in mapping.stations} == seqs

        victim = sorted(gone)[0]
        with pytest.raises(OrderRejected) as refused:  # the same id again would run the order twice
            await bridge.submit(victim, "AC-W", {})
        assert refused.value.field == "order_id"
        assert "has since left the journal (--journal-retention-days); a new order needs a new id" in str(
            refused.value
        )

        await bridge.cancel(stored.order_id)  # else the line is never idle
        after = await run_orders(bridge, "S", 2)
        assert {o.state for o in after} == {OrderState.COMPLETED}
        rows = bridge.journal.load_audit()
        told = f"ok: removed {len(gone)} orders"
        assert any(r[1] == "journal_pruned" and r[4].startswith(told) for r in rows)
        assert not any(r[1] == "order_submit" and r[2] == "alice" for r in rows)

    # a restart numbers each station's next step after the newest the journal kept
    async with Bridge(mapping, settings(tmp_path)) as bridge:
        again = await run_orders(bridge, "T", 2)
        assert {o.state for o in again} == {OrderState.COMPLETED}
        assert bridge.get(victim) is None
        with pytest.raises(OrderRejected):
            await bridge.submit(victim, "AC-W", {})
    assert all(plc.status.reexecuted_count == 0 for plc in line.plcs.values())
    code, out, err = await cli("journal", "check", "--data-dir", str(tmp_path / "data"))
    assert code == 0, err
    assert f"; {len(gone)} finished orders removed by retention" in out


async def test_the_bridge_prunes_on_its_own_schedule(ac_mapping, line, tmp_path):
    mapping = apply_deployment(ac_mapping, line.endpoints())
    keep = settings(tmp_path, journal_retention_s=0.5, journal_prune_every_s=0.1)
    async with Bridge(mapping, keep) as bridge:
        done = await run_orders(bridge, "A", 6)
        gone = {o.order_id for o in done} - newest_step_orders(bridge)
        await until(lambda: all(bridge.journal.pruned_at(i) is not None for i in gone), timeout_s=10)
        assert all(bridge.get(i) is None for i in gone)


def test_audit_and_alarm_history_are_trimmed_a_batch_at_a_time(tmp_path, ac_mapping):
    """More rows than a batch: every old one goes but each alarm's newest change, what a restart
    takes up; rows younger than the retention stay."""
    journal = SqliteJournal(tmp_path / "journal.sqlite")
    old, now = time.time() - 10 * 86_400, time.time()
    definitions = list(_alarm_definitions(ac_mapping))[:3]
    try:
        with journal._db:  # the rows as the writer would have written them, at once
            journal._db.executemany(
                "INSERT INTO audit (at, event, user, thumbprint, outcome) VALUES (?,?,?,?,?)",
                [(_iso(old + i), "login", "bob", "", "ok") for i in range(450)]
                + [(_iso(now), "login", "bob", "", "ok")] * 5,
            )
        for definition in definitions:
            for i in range(170):
                journal.add_alarm(AlarmState(definition, old + i, active=bool(i % 2)), "changed")
        journal.add_alarm(AlarmState(definitions[0], now, active=True), "changed")
        assert len(journal.load_alarms(limit=10_000)) == 3 * 170 + 1

        before = datetime.fromtimestamp(now - 86_400, UTC)
        total = retention.Pruned()
        cursor = retention.Cursor()
        batches = 0
        while not cursor.done:
            total += journal.prune(before, ac_mapping.stations, cursor)
            cursor = total.cursor
            batches += 1
        assert batches >= 3  # 450 audit rows, 200 a batch
        assert total.audit == 450
        assert len(journal.load_audit()) == 5
        last = journal.last_alarms()
        kept = journal.load_alarms(limit=10_000)
        assert total.alarms == 3 * 170 + 1 - len(kept)
        assert len(kept) == 3  # the first alarm's young change; the newest old one of the others
        assert {row["alarm"] for row in kept} == {d.alarm_id for d in definitions}
        assert last[definitions[1].alarm_id]["at"] == _iso(old + 169)
    finally:
        journal.close()


def test_an_older_journal_gains_the_retention_tables_on_open(tmp_path):
    path = tmp_path / "journal.sqlite"
    SqliteJournal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE pruned")
        db.execute("DROP INDEX orders_completed")
    journal = SqliteJournal(path)
    try:
        assert journal.pruned_at("X-1") is None
    finally:
        journal.close()


def _request(order_id: str):
    from bridge.domain.orders import OrderRequest

    return OrderRequest(order_id, "AC-W", {}, None, 0)


def _alarm_definitions(mapping):
    from bridge.alarms.book import definitions

    return definitions(mapping)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


async def test_export_gives_a_row_per_step_beside_the_running_bridge(ac_mapping, line, tmp_path):
    mapping = apply_deployment(ac_mapping, line.endpoints())
    async with Bridge(mapping, settings(tmp_path)) as bridge:
        capacities = (9000, 18000, 24000)
        done = await run_orders(bridge, "E", 3, options=lambda i: {"capacity_btu": capacities[i]})
        await bridge.engine.store_order(_request("E-never"))
        await bridge.cancel("E-never")  # ended before any step: one row with no station
        bridge.audit("order_cancel", "olga", "", "ok E-never")
        assert bridge.journal.load_audit()[-1][2] == "olga"  # written, not only queued
        data = str(tmp_path / "data")

        code, out, err = await cli("journal", "export", "--data-dir", data)
        assert code == 0, err
        rows = list(csv.DictReader(io.StringIO(out)))
        steps = sum(len(order.steps) for order in done)
        assert len(rows) == steps + 1
        assert f"{steps + 1} rows exported from" in err
        never = [r for r in rows if r["order_id"] == "E-never"]
        assert [(r["state"], r["station"], r["serial"]) for r in never] == [("cancelled", "", "")]
        for order, capacity in zip(done, capacities, strict=True):
            mine = [r for r in rows if r["order_id"] == order.order_id]
            assert [r["station"] for r in mine] == [step.station for step in order.steps]
            assert {r["serial"] for r in mine} == {str(order.units[0].serial)}
            assert json.loads(mine[0]["options"])["capacity_btu"] == capacity
            tested = next(r for r in mine if r["station"].startswith("test_"))
            assert json.loads(tested["results"])["passed"] is True
            assert {r["result_code"] for r in mine} == {"0"}

        target = tmp_path / "out.jsonl"
        later = "2099-01-01"
        jsonl = ("--format", "jsonl", "-o", str(target))
        code, _, err = await cli("journal", "export", "--data-dir", data, *jsonl)
        assert code == 0, err
        objects = [json.loads(line) for line in target.read_text().splitlines()]
        assert len(objects) == steps + 1
        assert all(isinstance(o["parameters"], dict) for o in objects if o["station"])
        code, out, err = await cli("journal", "export", "--data-dir", data, "--since", later)
        assert (code, out.splitlines()[1:]) == (0, [])  # the header alone

    code, out, err = await cli("audit", "--data-dir", data)  # read only, the bridge stopped or not
    assert code == 0, err
    assert "order_cancel    olga" in out.splitlines()[-1]
    code, out, err = await cli("audit", "--data-dir", data, "--limit", "0", "--jsonl")  # for a SIEM
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1] == {**records[-1], "event": "order_cancel", "user": "olga", "outcome": "ok E-never"}
    assert set(records[0]) == {"at", "event", "user", "thumbprint", "outcome", "channel"}
    code, out, err = await cli("audit", "--data-dir", data, "--since", "2099-01-01", "--jsonl")
    assert (code, out) == (0, "")
    for command in (("audit",), ("alarm", "history"), ("journal", "export")):  # a wrong folder: an error
        code, out, err = await cli(*command, "--data-dir", str(tmp_path / "typo"))
        assert (code, out) == (1, "")
        assert "typo/journal.sqlite: no such file" in err
    assert not (tmp_path / "typo").exists()  # nothing made there

    code, _, err = await cli("journal", "export", "--data-dir", data, "--since", "yesterday")
    assert code == 2
    assert "--since" in err
    assert "'yesterday' is not an ISO 8601 date or time" in err
