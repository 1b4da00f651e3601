"""One scanner per PLC: telemetry polled on a fixed-rate schedule, and the handshake status shared
with the engine.

The schedule keeps its due times at start + k × period, whatever each poll costs, so the rate does
not drift; a poll that cannot start before the next one is due is counted missed and skipped,
never queued behind (docs/telemetry.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from bridge.errors import StationError
from bridge.lifecycle import raise_if_cancelled
from bridge.modbus.link import ModbusStationLink

log = structlog.get_logger(__name__)


@dataclass
class Schedule:
    """Fixed-rate due times (pure; the clock is injected so tests can drive it)."""

    period_s: float
    clock: Callable[[], float] = time.monotonic
    next_due: float = field(default=math.nan)
    done: int = 0
    missed: int = 0

    def wait_s(self) -> float:
        """How long until the next poll is due (0 when it is due or late)."""
        now = self.clock()
        if math.isnan(self.next_due):
            self.next_due = now
        return max(0.0, self.next_due - now)

    def start(self) -> None:
        """A poll starts now: count the due times it is too late for as missed, book the next."""
        now = self.clock()
        if math.isnan(self.next_due):
            self.next_due = now
        late = now - self.next_due
        skipped = int(late // self.period_s) if late >= self.period_s else 0
        self.missed += skipped
        self.done += 1
        self.next_due += (skipped + 1) * self.period_s


class StationScanner:
    """Polls one station's telemetry on schedule and tells the link's listeners after each poll."""

    def __init__(self, link: ModbusStationLink, period_s: float) -> None:
        self.link = link
        self.schedule = Schedule(period_s)
        self._log = log.bind(station=link.station)

    async def run(self) -> None:
        link = self.link
        self._log.info(
            "telemetry_polling", interval_s=self.schedule.period_s, requests_per_poll=link.requests_per_poll
        )
        while True:
            await asyncio.sleep(self.schedule.wait_s())
            self.schedule.start()
            link.counters.polls_done, link.counters.polls_missed = self.schedule.done, self.schedule.missed
            try:
                await link.read_telemetry(status_max_age_s=self.schedule.period_s / 2)
            except StationError:  # logged once by the link; the schedule goes on, backing off while down
                raise_if_cancelled()
                await asyncio.sleep(max(0.0, link.retry_delay_s() - self.schedule.period_s))
            for listener in link.listeners:
                try:
                    await listener(link)
                except Exception:  # a listener's bug must not stop the polling, nor pass unseen
                    self._log.exception("telemetry_listener_failed")
            raise_if_cancelled()  # a cancel swallowed inside pymodbus must still end this loop
