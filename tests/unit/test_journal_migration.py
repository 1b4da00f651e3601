"""A journal written before units kept their parameters and orders their client still opens, and its
orders still run."""

from __future__ import annotations

import json
import sqlite3

from bridge.domain.model import Order, OrderEvent, OrderState, Unit, utcnow
from bridge.journal import SqliteJournal
from bridge.journal.schema import SCHEMA


def test_units_without_parameters_and_orders_without_client_get_the_columns(tmp_path):
    path = tmp_path / "journal.sqlite"
    old = SCHEMA.replace(
        "    parameters TEXT,\n    PRIMARY KEY (order_id, unit_index)",
        "    PRIMARY KEY (order_id, unit_index)",
    ).replace(",\n    client TEXT NOT NULL DEFAULT ''\n", "\n")
    assert old.count("parameters TEXT") == SCHEMA.count("parameters TEXT") - 1
    assert "client TEXT" not in old
    with sqlite3.connect(path) as db:
        db.executescript(old)
        db.execute(
            "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                "OLD-1",
                "AC-W",
                json.dumps({}),
                1,
                0,
                "queued",
                None,
                None,
                None,
                utcnow().isoformat(),
                None,
                1,
            ),
        )
        db.execute("INSERT INTO units VALUES (?,?,?,?,?)", ("OLD-1", 0, 1, 0, "waiting"))
    journal = SqliteJournal(path)
    try:
        (order,) = journal.load_unfinished()
        assert order.units[0].parameters == {}  # the engine derives them when the step begins
        assert order.client == ""  # held, after a restart, by the client that named none
        new = Order("NEW-1", "AC-W", {}, 1, accept_index=2, client="mes-a")
        new.units = [Unit("NEW-1", 0, 2, parameters={"press": {"chassis_size": 1}})]
        journal.add_order(new, OrderEvent("NEW-1", OrderState.RECEIVED, utcnow()))
        loaded = journal.load_order("NEW-1")
        assert (loaded.units[0].parameters, loaded.client) == ({"press": {"chassis_size": 1}}, "mes-a")
    finally:
        journal.close()
