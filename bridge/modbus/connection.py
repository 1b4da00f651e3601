"""One connection to a station PLC, one request at a time: every try bounded in time, retried as
the station's link policy says, the connection rebuilt after a timeout or garbage, and a watchdog
for a request the library never ends. Every failure becomes one `StationError` with the cause
chained; an outage is logged once at ERROR, the recovery once at INFO."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from bridge.counters import LinkCounters
from bridge.errors import StationError
from bridge.lifecycle import raise_if_cancelled
from bridge.mapping.model import Endpoint, LinkSettings
from bridge.modbus import pymodbus_seams

REQUEST_TIMES_KEPT = 4096  # durations kept between two polls (telemetry off: the newest)


class StationConnection:
    """The transport under a `ModbusStationLink`: what it knows of the PLC is only whether it answers."""

    def __init__(
        self,
        station: str,
        endpoint: Endpoint,
        policy: LinkSettings,
        *,
        timeout_s: float,
        backoff_initial_s: float,
        backoff_max_s: float,
        seed: int | None,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.station, self.endpoint, self.policy = station, endpoint, policy
        self.timeout_s = timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._random = random.Random(seed)
        self.failures = 0  # failed requests in a row (each after all its tries)
        self._good = 0  # good requests in a row while offline
        self._lock = asyncio.Lock()
        self._held_since = 0.0  # time.monotonic() when the request now holding the link took it
        self._client: AsyncModbusTcpClient | None = None
        self._ever_connected = False
        self.counters = LinkCounters()
        # each request's duration, all its tries, until the scanner takes them into its next event
        self.request_seconds: deque[float] = deque(maxlen=REQUEST_TIMES_KEPT)
        self._log = log

    def backoff_s(self, exponent: int) -> float:
        """Capped exponential backoff with jitter, for the `exponent`-th failure in a row."""
        ceiling = min(self._backoff_max_s, self._backoff_initial_s * 2 ** min(exponent, 20))
        return ceiling * self._random.uniform(0.5, 1.0)

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self.counters.connected = False

    async def _connect(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.close()
        ep = self.endpoint
        if ep.serial is not None:  # Modbus RTU: the same handshake, retries and counters
            line = ep.serial
            self._client = AsyncModbusSerialClient(  # type: ignore[assignment]
                line.device, framer=FramerType.RTU, baudrate=line.baudrate, parity=line.parity,
                stopbits=line.stopbits, bytesize=line.bytesize, timeout=self.timeout_s, retries=0,
                reconnect_delay=0,
            )  # fmt: skip
        else:
            self._client = AsyncModbusTcpClient(
                ep.host, port=ep.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
            )
        pymodbus_seams.count_stale_replies(self._client, self._count_stale_reply)
        if not await self._client.connect():  # bounded by the caller's timeout
            raise StationError(f"cannot connect to {ep}", station=self.station)
        if self._ever_connected:
            self.counters.reconnects += 1
        self._ever_connected = True
        return self._client

    def _count_stale_reply(self) -> None:
        self.counters.stale_replies += 1

    async def request(
        self, what: str, call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        """One request, tried up to `policy.attempts` times: every try bounded in time (connect
        included), the connection rebuilt after a timeout or garbage so a late reply cannot be
        taken for the next one's. A Modbus exception answer is final, but for 6 (device busy)."""
        lock = self._lock
        while not _free(lock):  # the watchdog: no request may hold the link longer than any request can take
            try:
                async with asyncio.timeout(self.longest_request_s()):
                    await lock.acquire()
                break
            except TimeoutError:
                raise_if_cancelled()
                if lock is not self._lock:  # rebuilt meanwhile: queue on the new one
                    lock = self._lock
                elif time.monotonic() - self._held_since >= self.longest_request_s():
                    raise self._rebuild(what, lock) from None
        else:
            await lock.acquire()  # free: taken at once, no timer needed
        self._held_since = began = time.monotonic()
        try:
            cause: object = None
            for attempt in range(self.policy.attempts):
                if lock is not self._lock:  # the watchdog rebuilt the link while this one was stuck
                    cause = "the link was rebuilt while this request was stuck"
                    break
                if attempt:
                    self.counters.retries += 1
                    if self.policy.retry_delay_s:
                        await asyncio.sleep(self.policy.retry_delay_s)
                client: AsyncModbusTcpClient | None = None
                try:
                    async with asyncio.timeout(self.timeout_s * 2):
                        client = await self._connect()
                        self.counters.requests += 1
                        reply = await call(client)
                except StationError as exc:  # could not connect
                    raise_if_cancelled()  # pymodbus's connect() answers a cancel with False
                    cause = exc
                    continue
                except (ModbusException, OSError, TimeoutError) as exc:
                    raise_if_cancelled()
                    if isinstance(exc, TimeoutError):
                        self.counters.timeouts += 1
                    elif pymodbus_seams.STALE_REPLY.search(str(exc)):
                        self.counters.stale_replies += 1
                    if client is not None:  # this try's connection (the watchdog may have made another)
                        client.close()
                    cause = exc
                    continue
                if reply.isError():
                    code = getattr(reply, "exception_code", "?")
                    cause = f"Modbus exception code {code}"
                    if code == 6:  # the PLC is busy: ask again
                        continue
                    break
                self.recovered()
                return reply
            raise self.failed(what, cause)
        finally:
            lock.release()
            self.request_seconds.append(time.monotonic() - began)

    def longest_request_s(self) -> float:
        """How long one request can hold the link, all its tries included, plus a margin."""
        return self.policy.attempts * (2 * self.timeout_s + self.policy.retry_delay_s) + 1.0

    def _rebuild(self, what: str, stuck: asyncio.Lock) -> StationError:
        """The request holding the link has held it longer than any request can take: it is stuck
        (an await the library never ends). Give the link a new lock and connection; the stuck
        request keeps the old ones, closed, and can send nothing more."""
        if self._lock is stuck:
            self._log.error("link_rebuilt", request=what, waited_s=self.longest_request_s())
            self.counters.rebuilds += 1
            self._lock = asyncio.Lock()
            if self._client is not None:
                self._client.close()
                self._client = None
        return self.failed(what, "the link made no progress; rebuilt")

    def failed(self, what: str, cause: object) -> StationError:
        """A request failed after all its tries; the station is declared offline only after
        `policy.offline_after` of them in a row ("connected" means answering properly)."""
        self.failures += 1
        self._good = 0
        self.counters.errors += 1
        self.counters.last_error = f"{what}: {cause}"
        if self.counters.connected and self.failures >= self.policy.offline_after:
            self._log.error(
                "station_unavailable", request=what, error=str(cause), failed_requests=self.failures
            )
            self.counters.connected = False
            self.counters.outages += 1
        elif not self._ever_connected and self.failures == 1:
            self._log.error("station_unavailable", request=what, error=str(cause))
        return StationError(f"{what}: {cause}", station=self.station)

    def recovered(self) -> None:
        """A good request: back online after `policy.online_after` in a row (at once the first
        time: there is no flapping to damp before the station ever answered)."""
        self.failures = 0
        if self.counters.connected:
            return
        self._good += 1
        if self.counters.outages == 0 or self._good >= self.policy.online_after:
            if self.counters.outages:
                self._log.info("station_recovered", good_requests=self._good)
            self.counters.connected = True
            self._good = 0


def _free(lock: asyncio.Lock) -> bool:
    """Whether acquire() takes the lock at once (unlocked, nobody queued): then no timer is needed."""
    return not lock.locked() and not getattr(lock, "_waiters", None)
