"""The one way out of the core: typed, frozen events and a hub that gives every subscriber its own
bounded queue.

The engine and the station scanners publish; faces (OPC UA, the line view, metrics, and the ones
to come) subscribe through `Bridge.events`. Publishing never waits: a subscriber that falls behind
loses its oldest events, counted and logged, and the scanner and the engine go on at their pace
(docs/events.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

from bridge.counters import LinkCounters
from bridge.domain.alarm_condition import AlarmState
from bridge.domain.model import Order, OrderEvent, Step, StepPhase
from bridge.handshake import StatusBlock
from bridge.limits import LogThrottle
from bridge.mapping.codec import Doubt

log = structlog.get_logger(__name__)

DEFAULT_QUEUE = 10_000


@dataclass(frozen=True, slots=True)
class OrderChanged:
    """An order changed state (`event`, as journaled); `order` is the order as it stands now, to
    be read, never changed (the engine owns it)."""

    event: OrderEvent
    order: Order


@dataclass(frozen=True, slots=True)
class StepChanged:
    """A step began, finished or closed. `phase` is the one it had when this happened: the step
    object moves on, and a subscriber that gets here late must still see the begin as a begin."""

    order: Order
    step: Step
    phase: StepPhase


@dataclass(frozen=True, slots=True)
class StationScanned:
    """One telemetry poll of one station, good or failed.

    The value dicts are never changed after publication (the scanner makes new ones each poll):
    a subscriber that kept the last event's `telemetry` and finds it is this one's `before` need
    compare only the names in `changed`."""

    station: str
    online: bool  # the PLC answers properly and has been read at least once
    read_at: float | None  # time.time() of the last good telemetry read
    telemetry: Mapping[str, Any]
    before: Mapping[str, Any]  # the telemetry dict this one replaced
    changed: Collection[str]  # the telemetry fields decoded anew by this poll
    setpoints: Mapping[str, Any]
    doubts: Mapping[str, Doubt]  # telemetry and setpoint values in doubt, with why
    read: frozenset[str]  # the telemetry and setpoint fields this poll read
    status: StatusBlock | None  # the handshake status as last read (by the engine or this poll)
    status_read_at: float | None
    status_invalid: bool  # the PLC answers, but its status block holds garbage
    counters: LinkCounters  # a copy, as of this poll
    request_seconds: tuple[float, ...] = ()  # each Modbus request's duration since the last poll


@dataclass(frozen=True, slots=True)
class AlarmChanged:
    """An alarm changed: `what` happened to it (activated, escalated, cleared, acknowledged,
    confirmed, shelved, unshelved, restored) and `alarm` is how it stands after."""

    alarm: AlarmState
    what: str


Event = OrderChanged | StepChanged | StationScanned | AlarmChanged
E = TypeVar("E")


class Subscription(Generic[E]):
    """One subscriber's queue: bounded, the oldest event dropped (and counted) when full."""

    def __init__(self, hub: EventHub, name: str, kinds: tuple[type, ...], maxsize: int) -> None:
        self.name, self.kinds, self.maxsize = name, kinds, maxsize
        self.dropped = 0
        self._hub = hub
        self._items: deque[E] = deque()
        self._ready = asyncio.Event()
        self._throttle = LogThrottle()

    def put(self, event: E) -> None:
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            if self._throttle.due():
                log.warning("events_dropped", subscriber=self.name, dropped_so_far=self.dropped)
        self._items.append(event)
        self._ready.set()

    async def get(self) -> E:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    async def batch(self) -> list[E]:
        """Every event waiting, at least one: a subscriber that is woken once handles all of them."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)

    async def __aiter__(self) -> AsyncIterator[E]:
        while True:
            yield await self.get()

    def close(self) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    """Fans each published event out to the subscriptions that asked for its kind."""

    def __init__(self) -> None:
        self._by_kind: dict[type, list[Subscription[Any]]] = {}

    def subscribe(self, name: str, *kinds: type, maxsize: int = DEFAULT_QUEUE) -> Subscription[Any]:
        """A queue of the events of `kinds` published from now on; close() it when done."""
        subscription: Subscription[Any] = Subscription(self, name, kinds, maxsize)
        for kind in kinds:
            self._by_kind.setdefault(kind, []).append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription[Any]) -> None:
        for kind in subscription.kinds:
            listeners = self._by_kind.get(kind, [])
            if subscription in listeners:
                listeners.remove(subscription)

    def publish(self, event: Event) -> None:
        for subscription in self._by_kind.get(type(event), ()):
            subscription.put(event)

    def wants(self, kind: type) -> bool:
        """Whether anyone subscribes to `kind` (a publisher may skip building an event nobody reads)."""
        return bool(self._by_kind.get(kind))
