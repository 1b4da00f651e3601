"""The bridge's heartbeat: a register written on a fixed period, so a PLC can tell a live bridge
from a dead one and refuse new starts while it is gone (docs/plc-guide.md, "The heartbeat").

Its own task per station, apart from the engine and the scanner: a long step or a slow poll never
delays it. A write that fails is the link's business (offline, back-off); the beat goes on.
"""

from __future__ import annotations

import asyncio

import structlog

from bridge.errors import StationError
from bridge.lifecycle import raise_if_cancelled
from bridge.modbus.link import ModbusStationLink

log = structlog.get_logger(__name__)


async def beat(link: ModbusStationLink) -> None:
    """Supervised: write the next heartbeat value every period, for ever."""
    heartbeat = link.heartbeat
    assert heartbeat is not None
    failing = False
    loop = asyncio.get_running_loop()
    while True:
        began = loop.time()
        try:
            await link.beat()
            if failing:
                log.info("heartbeat_written_again", station=link.station)
            failing = False
        except StationError as exc:
            raise_if_cancelled()
            if not failing:  # once per outage: the link says the rest
                log.warning("heartbeat_not_written", station=link.station, error=str(exc))
            failing = True
        raise_if_cancelled()  # a cancel a library turned into an answer still ends the beat
        # A period from the last try's start, not its end: a try that failed slowly (every retry
        # timed out) must not stretch the PLC's wait for a change past its timeout on its own.
        await asyncio.sleep(max(0.0, began + heartbeat.period_s - loop.time()))
