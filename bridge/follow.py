"""A face's way of reading the event stream: its own subscription and one supervised task that
hands it every event in batches, so a slow face loses its oldest events, never the line's pace.

Within a batch the task lets the loop run once `yield_after_s` of handling has passed: the
scanners of a whole line publish at one instant, and a face that handled them all in one go held
a step's Modbus answer behind every one of them (docs/engine.md). Cheap events (an order's) still
go several to a turn of the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bridge.domain.events import DEFAULT_QUEUE, EventHub, Subscription
from bridge.lifecycle import cancel_and_wait
from bridge.supervise import start_supervised

log = structlog.get_logger(__name__)

YIELD_AFTER_S = 0.0005  # about one station's scan in the OPC UA face, 125 changed values


class Follower:
    """Subscribes on `subscribe()` (before the face reads what stands now, so nothing falls between
    the two), then, from `start()`, calls `handle(event)` for each event in the order published.

    `handle` raising is logged with the event and the next one is handled: one bad update must
    not freeze a face."""

    def __init__(
        self,
        hub: EventHub,
        name: str,
        kinds: tuple[type, ...],
        handle: Callable[[Any], Awaitable[None]],
        *,
        maxsize: int = DEFAULT_QUEUE,
        yield_after_s: float = YIELD_AFTER_S,
    ) -> None:
        self.hub, self.name, self.kinds, self.handle, self.maxsize = hub, name, kinds, handle, maxsize
        self.yield_after_s = yield_after_s
        self.subscription: Subscription[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def subscribe(self) -> None:
        if self.subscription is None:
            self.subscription = self.hub.subscribe(self.name, *self.kinds, maxsize=self.maxsize)

    async def start(self) -> None:
        self.subscribe()
        start_supervised(self._tasks, self.name, self._run)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None

    async def _run(self) -> None:
        assert self.subscription is not None
        while True:
            events = await self.subscription.batch()
            turn_ends = time.monotonic() + self.yield_after_s
            for n, event in enumerate(events, 1):
                try:
                    await self.handle(event)
                except Exception:
                    log.exception("event_handling_failed", subscriber=self.name, kind=type(event).__name__)
                if n < len(events) and time.monotonic() >= turn_ends:
                    await asyncio.sleep(0)  # the loop's other work, then the rest of the batch
                    turn_ends = time.monotonic() + self.yield_after_s


async def at_most_every(every_s: float, changed: asyncio.Event, write: Callable[[], Awaitable[None]]) -> None:
    """`write()` each time `changed` is set: at once after a quiet spell, then at most every
    `every_s` however often it is set, for what a face shows of something that changes faster
    than anyone reads it (a station's latest step, the job lists). Runs until cancelled."""
    while True:
        await changed.wait()
        changed.clear()
        await write()
        await asyncio.sleep(every_s)
