"""One scanner per PLC: telemetry polled on a fixed-rate schedule, and the handshake status shared
with the engine.

The schedule keeps its due times at whole multiples of the period, whatever each poll costs, so
the rate does not drift; a poll that cannot start before the next one is due is counted missed and
skipped, never queued behind (docs/telemetry.md).
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from bridge.domain.events import StationScanned
from bridge.errors import StationError
from bridge.lifecycle import raise_if_cancelled
from bridge.modbus.link import ModbusStationLink

log = structlog.get_logger(__name__)


_EARLY_S = 1e-4


@dataclass
class Schedule:
    """Fixed-rate due times (pure; the clock is injected so tests can drive it)."""

    period_s: float
    clock: Callable[[], float] = time.monotonic
    next_due: float = field(default=math.nan)
    done: int = 0
    missed: int = 0

    def wait_s(self) -> float:
        """How long until the next poll is due (0 when it is due or late; the first is due at once)."""
        if math.isnan(self.next_due):
            return 0.0
        return max(0.0, self.next_due - self.clock())

    def start(self) -> int:
        """A poll starts now: count the due times it is too late for as missed (and return how
        many), book the next.

        After the first poll the due times are the whole multiples of the period: stations polled
        at one rate are due together and wake the bridge once per period, not once each (each
        wake-up costs more than the poll's own work on a small VM; docs/telemetry.md)."""
        now = self.clock()
        if math.isnan(self.next_due):
            self.done += 1
            self.next_due = (math.floor(now / self.period_s + 1e-9) + 1) * self.period_s
            return 0
        late = now - self.next_due
        skipped = int(late // self.period_s) if late >= self.period_s else 0
        self.missed += skipped
        self.done += 1
        self.next_due += (skipped + 1) * self.period_s
        return skipped


class StationScanner:
    """Polls one station's telemetry on schedule, each field group at its own period, and publishes
    a `StationScanned` after each poll (never waiting for whoever reads it)."""

    def __init__(
        self, link: ModbusStationLink, period_s: float, publish: Callable[[StationScanned], None]
    ) -> None:
        self.link = link
        self.publish = publish
        # None: the station's own period (its fields that set none, and the setpoints)
        self.schedules: dict[float | None, Schedule] = {None: Schedule(period_s)}
        self.schedules.update({p: Schedule(p) for p in link.telemetry_periods})
        self._log = log.bind(station=link.station)

    @property
    def schedule(self) -> Schedule:
        return self.schedules[None]

    async def run(self) -> None:
        link, schedules = self.link, self.schedules
        self._log.info(
            "telemetry_polling",
            interval_s=self.schedule.period_s,
            field_intervals_s=link.telemetry_periods or None,
            requests_per_poll=link.requests_per_poll,
        )
        counters = link.counters
        while True:
            await asyncio.sleep(min(s.wait_s() for s in schedules.values()))
            # the loop may wake a timer a hair early: that is on time, not a reason to skip a poll
            due = [period for period, s in schedules.items() if s.wait_s() <= _EARLY_S]
            if not due:
                continue
            for period in due:
                counters.polls_missed += schedules[period].start()
            counters.polls_done += len(due)
            fastest = min(schedules[p].period_s for p in due)
            # the status block: shared with the engine's reads while a step runs, else read at the idle pace
            status_max_age_s = max(fastest / 2, link.idle_status_interval_s)
            try:
                await link.read_telemetry(status_max_age_s=status_max_age_s, periods=due)
            except StationError:  # logged once by the link; the schedule goes on, backing off while down
                raise_if_cancelled()
                await asyncio.sleep(max(0.0, link.retry_delay_s() - fastest))
            self.publish(self.scanned())
            raise_if_cancelled()  # a cancel swallowed inside pymodbus must still end this loop

    def scanned(self) -> StationScanned:
        """The poll just made, as the event faces read (the link's dicts are replaced, never
        changed in place, so the event may hold them as they are)."""
        link = self.link
        durations = tuple(link.request_seconds)
        link.request_seconds.clear()
        return StationScanned(
            station=link.station,
            online=link.counters.connected and link.telemetry_read_at is not None,
            read_at=link.telemetry_read_at,
            telemetry=link.telemetry,
            before=link.telemetry_before,
            changed=link.telemetry_changed,
            setpoints=link.setpoints,
            doubts=link.doubts,
            read=link.last_read,
            status=link.last_status,
            status_read_at=link.status_read_at,
            status_invalid=link.status_invalid,
            counters=copy.copy(link.counters),
            request_seconds=durations,
        )
