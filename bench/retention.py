"""Journal retention on a journal of a long-running line: how long each batch holds the journal's
writer thread (a step commit waits behind at most one), and the whole pass.

`python -m bench.retention [--orders N]`: N finished orders of the default 8-station route (one unit,
eight steps and four events each, as the engine writes them), all older than the retention, plus as
many audit records; then one pass, batch by batch, as `JournalPruner.prune` runs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.journal import retention
from bridge.journal.sqlite import SqliteJournal

STATIONS = ("chassis", "coil", "compressor", "charge", "panel", "test_a", "test_b", "pack")
EVENTS = ("received", "queued", "running", "completed")


def fill(journal: SqliteJournal, orders: int, old: datetime) -> None:
    """`orders` finished orders of one unit each, every row as the engine's, in one transaction."""
    db = journal._db
    params = json.dumps({"chassis_size": 2, "coil_rows": 3, "fin_pitch_mm": 1.4, "charge_g": 980})
    results = json.dumps({"passed": True, "measured_capacity_w": 3523.1})
    db.execute("BEGIN")
    for i in range(orders):
        oid, at = f"B-{i:07}", (old + timedelta(seconds=i)).isoformat()
        db.execute(
            "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (oid, "AC-W", '{"capacity_btu": 18000}', 1, 0, "completed", None, None, None, at, at, i + 1, ""),
        )
        db.execute("INSERT INTO units VALUES (?,?,?,?,?,?)", (oid, 0, 100001 + i, 8, "done", params))
        db.executemany(
            "INSERT INTO steps (order_id, unit_index, route_index, station, seq, parameters, phase,"
            " started_at, finished_at, results, result_code) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(oid, 0, r, st, i + 1, params, "closed", at, at, results, 0) for r, st in enumerate(STATIONS)],
        )
        db.executemany(
            "INSERT INTO events (order_id, state, station, unit_index, result_code, message, at)"
            " VALUES (?,?,?,?,?,?,?)",
            [(oid, state, None, None, None, "", at) for state in EVENTS],
        )
        db.execute(
            "INSERT INTO audit (at, event, user, thumbprint, outcome) VALUES (?,?,?,?,?)",
            (at, "order_submit", "mes", "", f"ok {oid}"),
        )
    db.execute("COMMIT")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=50_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        journal = SqliteJournal(path)
        now = datetime.now(UTC)
        fill(journal, args.orders, now - timedelta(days=400))
        size_mb = path.stat().st_size / 2**20
        cursor, total, batches_ms = retention.Cursor(), retention.Pruned(), []
        began = time.perf_counter()
        while not cursor.done:
            start = time.perf_counter()
            total += journal.prune(now - timedelta(days=30), STATIONS, cursor)
            batches_ms.append((time.perf_counter() - start) * 1000)
            cursor = total.cursor
        elapsed = time.perf_counter() - began
        journal.close()
    print(f"journal retention: {args.orders:,} finished orders of 8 steps ({size_mb:.0f} MB), all past it")
    print(f"  removed               {total.orders:,} orders, {total.audit:,} audit records, {elapsed:.1f} s")
    print(f"  one batch             p50 {statistics.median(batches_ms):.1f} ms, max {max(batches_ms):.1f} ms"
          f" ({len(batches_ms)} batches of {retention.BATCH}; a step commit waits behind one at most)")


if __name__ == "__main__":
    main()
