"""The rows of each journal write, built from memory as it stands on the thread that owns it (the
event loop), so the writer thread that commits them never reads an object the loop changes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bridge.domain.model import Order, OrderEvent, Step, Unit
from bridge.domain.ports import Rows  # statements run in one transaction, each (sql, parameters, many)
from bridge.journal.schema import ORDER_SQL


def add_order_rows(order: Order, event: OrderEvent) -> Rows:
    return [
        (
            ORDER_SQL,
            (
                order.order_id, order.product, json.dumps(order.options), order.quantity,
                order.priority, order.state, order.current_station, order.fault_station,
                order.result_code, _ts(order.created_at), _ts(order.completed_at), order.accept_index,
                order.client,
            ),
            False,
        ),
        (
            "INSERT INTO units (order_id, unit_index, serial, next_step, state, parameters)"
            " VALUES (?,?,?,?,?,?)",
            [
                (u.order_id, u.index, u.serial, u.next_step, u.state, json.dumps(u.parameters))
                for u in order.units
            ],
            True,
        ),
        _event(event),
    ]  # fmt: skip


def replace_order_rows(order: Order, event: OrderEvent) -> Rows:
    """An order's content and units made anew (an update before any unit began)."""
    update = (
        "UPDATE orders SET product=?, options=?, quantity=?, priority=? WHERE order_id=?",
        (order.product, json.dumps(order.options), order.quantity, order.priority, order.order_id),
        False,
    )
    units = add_order_rows(order, event)[1]
    return [update, ("DELETE FROM units WHERE order_id=?", (order.order_id,), False), units, _event(event)]


def clear_order_rows(order_id: str, at: datetime) -> Rows:
    """An ended order taken off the job order list."""
    return [("INSERT OR IGNORE INTO cleared (order_id, at) VALUES (?,?)", (order_id, _ts(at)), False)]


def save_order_rows(order: Order, event: OrderEvent) -> Rows:
    return [_update_order(order), *(_update_unit(unit) for unit in order.units), _event(event)]


def begin_step_rows(order: Order, unit: Unit, step: Step, event: OrderEvent | None) -> Rows:
    """The step's insert first: commit() returns its row id, the step's `id`."""
    insert = (
        "INSERT INTO steps (order_id, unit_index, route_index, station, seq, parameters, phase,"
        " started_at) VALUES (?,?,?,?,?,?,?,?)",
        (
            step.order_id, step.unit_index, step.route_index, step.station, step.seq,
            json.dumps(step.parameters), step.phase, _ts(step.started_at),
        ),
        False,
    )  # fmt: skip
    rows: Rows = [insert, _update_order(order), _update_unit(unit)]
    if event is not None:
        rows.append(_event(event))
    return rows


def finish_step_rows(step: Step) -> Rows:
    return [_update_step(step)]


def close_step_rows(order: Order, unit: Unit, step: Step, events: list[OrderEvent]) -> Rows:
    # every unit: a fault or cancel can settle sibling units too
    return [
        _update_step(step),
        _update_order(order),
        *(_update_unit(u) for u in order.units),
        *(_event(event) for event in events),
    ]


def _update_order(order: Order) -> tuple[str, Any, bool]:
    return (
        "UPDATE orders SET state=?, current_station=?, fault_station=?, result_code=?, completed_at=?"
        " WHERE order_id=?",
        (
            order.state, order.current_station, order.fault_station, order.result_code,
            _ts(order.completed_at), order.order_id,
        ),
        False,
    )  # fmt: skip


def _update_unit(unit: Unit) -> tuple[str, Any, bool]:
    return (
        "UPDATE units SET next_step=?, state=? WHERE order_id=? AND unit_index=?",
        (unit.next_step, unit.state, unit.order_id, unit.index),
        False,
    )


def _update_step(step: Step) -> tuple[str, Any, bool]:
    results = None if step.results is None else json.dumps(step.results)
    return (
        "UPDATE steps SET phase=?, finished_at=?, results=?, result_code=? WHERE id=?",
        (step.phase, _ts(step.finished_at), results, step.result_code, step.id),
        False,
    )


def _event(event: OrderEvent) -> tuple[str, Any, bool]:
    return (
        "INSERT INTO events (order_id, state, station, unit_index, result_code, message, at)"
        " VALUES (?,?,?,?,?,?,?)",
        (
            event.order_id, event.state, event.station, event.unit_index, event.result_code,
            event.message, _ts(event.at),
        ),
        False,
    )  # fmt: skip


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
