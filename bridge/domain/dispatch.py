"""Units waiting for their next station, the best one per station first: highest priority, then
first accepted, then unit index.

A unit that any of a parallel group may serve sits in each of their heaps; the first station to
take it marks it gone and the others skip it when it comes to their top. So a station finds its
best unit without scanning every waiting unit (it did, once per wake-up of every station: a
backlog of a thousand units cost more than the steps).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from bridge.domain.model import Order, Unit


@dataclass(eq=False)
class Waiting:
    key: tuple[int, int, int]
    order: Order
    unit: Unit
    stations: frozenset[str]
    gone: bool = False  # taken by a station, or dropped with its order


class DispatchList:
    def __init__(self) -> None:
        self._live: dict[int, Waiting] = {}
        self._heaps: dict[str, list[tuple[tuple[int, int, int], int, Waiting]]] = {}
        self._order = itertools.count()  # ties (one unit enqueued twice) never compare Waiting
        self._gone = 0  # gone entries still in some heap

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Waiting]:
        return iter(list(self._live.values()))

    def add(self, waiting: Waiting) -> None:
        self._live[id(waiting)] = waiting
        for station in waiting.stations:
            heapq.heappush(self._heaps.setdefault(station, []), (waiting.key, next(self._order), waiting))

    def best(self, station: str) -> Waiting | None:
        heap = self._heaps.get(station)
        while heap and heap[0][2].gone:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def take(self, waiting: Waiting) -> None:
        waiting.gone = True
        self._live.pop(id(waiting), None)
        self._gone += len(waiting.stations)
        if self._gone > 1000 + 2 * len(self._live):  # a station that takes nothing keeps gone entries
            self._rebuild()

    def drop_order(self, order: Order) -> None:
        for waiting in [w for w in self._live.values() if w.order is order]:
            self.take(waiting)

    def _rebuild(self) -> None:
        live = list(self._live.values())
        self._heaps, self._gone = {}, 0
        for waiting in live:
            for station in waiting.stations:
                self._heaps.setdefault(station, []).append((waiting.key, next(self._order), waiting))
        for heap in self._heaps.values():
            heapq.heapify(heap)
