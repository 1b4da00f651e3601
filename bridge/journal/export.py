"""Finished orders out of the journal, one row per station step, for the plant's own records (a
quality database, a spreadsheet, an archive before retention removes them): which unit serial got
which parameters at which station, and what the station reported.

Read only (a journal of a running bridge may be read as it works: WAL), a chunk of orders at a
time by their completion time, so a long journal costs memory for one chunk, not all of it.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from bridge.journal.reads import finished_orders

COLUMNS = (
    "order_id", "product", "options", "quantity", "state", "completed_at", "unit", "serial", "station",
    "seq", "started_at", "finished_at", "result_code", "parameters", "results",
)  # fmt: skip
JSON_COLUMNS = ("options", "parameters", "results")
_STEPS = (
    "SELECT s.unit_index AS unit, u.serial, s.station, s.seq, s.started_at, s.finished_at, s.result_code,"
    " s.parameters, s.results FROM steps s JOIN units u USING (order_id, unit_index)"
    " WHERE s.order_id=? ORDER BY s.unit_index, s.route_index"
)


def step_rows(
    db: sqlite3.Connection, since: datetime | None, until: datetime | None, chunk: int = 500
) -> Iterator[dict[str, Any]]:
    """A row per step of every order finished in [since, until), oldest first; an order that ended
    before any step (cancelled while it waited) is one row with no station."""
    low = since.isoformat() if since else ""
    high = (until or datetime.now(UTC)).isoformat()
    after = ("", "")
    while True:
        orders = finished_orders(db, low, high, after, chunk)
        for order in orders:
            steps = db.execute(_STEPS, (order["order_id"],)).fetchall()
            for step in steps or [None]:
                row = {**dict(order), **(dict(step) if step is not None else {})}
                yield {column: row.get(column) for column in COLUMNS}
        if len(orders) < chunk:
            return
        after = (orders[-1]["completed_at"], orders[-1]["order_id"])


def write_csv(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    """The rows as CSV with a header; the JSON columns as JSON text. How many rows."""
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007 - the count is the last index
        writer.writerow(row)
    return count


def write_jsonl(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    """A JSON object a line, the JSON columns as objects. How many rows."""
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007
        decoded = {k: json.loads(v) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()}
        out.write(json.dumps(decoded, separators=(",", ":")) + "\n")
    return count
