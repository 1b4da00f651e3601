"""The dispatch list: each station's best unit first, a unit of a parallel group taken once."""

from __future__ import annotations

from bridge.domain.dispatch import DispatchList, Waiting
from bridge.domain.model import Order, Unit


def _waiting(priority: int, accepted: int, stations: str) -> Waiting:
    order = Order(f"O{accepted}", "AC-W", {}, 1, priority, accept_index=accepted)
    return Waiting(
        (-priority, accepted, 0), order, Unit(order.order_id, 0, accepted), frozenset(stations.split("|"))
    )


def test_each_station_gets_its_best_unit_first_and_a_shared_one_only_once():
    waiting = DispatchList()
    late_urgent, early, shared = _waiting(5, 3, "a"), _waiting(0, 1, "a"), _waiting(0, 2, "a|b")
    for entry in (early, shared, late_urgent):
        waiting.add(entry)
    assert waiting.best("a") is late_urgent  # priority first
    waiting.take(late_urgent)
    assert waiting.best("a") is early  # then first accepted
    assert waiting.best("b") is shared
    waiting.take(shared)  # taken by b: a never sees it
    waiting.take(early)
    assert waiting.best("a") is None
    assert len(waiting) == 0


def test_an_order_dropped_leaves_every_station_s_list():
    waiting = DispatchList()
    entry = _waiting(0, 1, "a|b")
    waiting.add(entry)
    waiting.drop_order(entry.order)
    assert waiting.best("a") is None
    assert waiting.best("b") is None
    assert list(waiting) == []


def test_entries_gone_from_a_station_that_takes_nothing_are_dropped_in_time():
    waiting = DispatchList()
    for i in range(3000):  # b never takes: every entry a takes stays in b's heap until rebuilt
        entry = _waiting(0, i, "a|b")
        waiting.add(entry)
        waiting.take(waiting.best("a"))
    assert len(waiting._heaps["b"]) < 1100
