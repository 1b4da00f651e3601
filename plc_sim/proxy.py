"""A seeded, fault-injecting Modbus TCP proxy: the honest test of a link is the network.

One `FaultyLink` listens on its own port and forwards whole Modbus TCP frames to one PLC,
misbehaving per frame as a plant network does (the kinds of issue 12): a reply lost after the PLC
acted, a request dropped, the connection reset, a reply delayed, garbage instead of a reply, a
reply with a wrong transaction id, and exception 6 (device busy) answered in the PLC's place.
Every write it forwards is logged (function code, address, count), so a test can check that
nothing outside the mapping was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

WRITE_CODES = {5, 6, 15, 16, 23}


@dataclass(frozen=True)
class FaultMix:
    """Chances per frame (0..1) of each fault; `delay_s` is how late a delayed reply comes."""

    lost_reply: float = 0.0
    dropped_request: float = 0.0
    reset: float = 0.0
    delayed_reply: float = 0.0
    garbage: float = 0.0
    wrong_transaction: float = 0.0
    busy: float = 0.0
    delay_s: float = 1.5

    def scaled(self, factor: float) -> FaultMix:
        return FaultMix(*(min(1.0, getattr(self, name) * factor) for name in FAULTS), delay_s=self.delay_s)


FAULTS = ("lost_reply", "dropped_request", "reset", "delayed_reply", "garbage", "wrong_transaction", "busy")
ISSUE_12_MIX = FaultMix(0.03, 0.02, 0.01, 0.01, 0.005, 0.005, 0.01)


@dataclass
class FaultyLink:
    target: tuple[str, int]
    mix: FaultMix
    seed: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    writes: list[tuple[int, int, int]] = field(default_factory=list)  # function code, address, count
    port: int = 0
    host: str = "127.0.0.1"  # where the proxy listens (port 0: the system picks one, set by start())
    # Faults on cue, before the random ones: (fault, test of the request's PDU), each used once,
    # on the first request it matches (a test aims one fault at one retry point).
    planned: list[tuple[str, Callable[[bytes], bool]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        target = f"{self.target[0]}:{self.target[1]}"
        self._log = log.bind(proxy=f"{self.host}:{self.port}", target=target)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def _fault(self, pdu: bytes) -> str | None:
        for i, (fault, matches) in enumerate(self.planned):
            if matches(pdu):
                del self.planned[i]
                return fault
        roll = self._random.random()
        for name in FAULTS:
            roll -= getattr(self.mix, name)
            if roll < 0:
                return name
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(*self.target)
            while True:
                request = await _frame(reader)
                fault = self._fault(request[7:])
                if fault is not None:
                    self.injected[fault] += 1
                    self._log.debug("proxy_fault", fault=fault)
                if fault == "reset":
                    return
                if fault == "dropped_request":
                    continue
                tid, unit, pdu = request[:2], request[6], request[7:]
                if fault == "busy":
                    writer.write(tid + b"\x00\x00\x00\x03" + bytes([unit, pdu[0] | 0x80, 6]))
                    await writer.drain()
                    continue
                if pdu[0] in WRITE_CODES:
                    address, count = _written(pdu)
                    self.writes.append((pdu[0], address, count))
                    self._log.info(
                        "proxy_write", function_code=pdu[0], address=address, count=count, fault=fault
                    )
                upstream.write(request)
                await upstream.drain()
                reply = await _frame(up_reader)
                if fault == "lost_reply":
                    continue
                if fault == "delayed_reply":
                    await asyncio.sleep(self.mix.delay_s)
                elif fault == "garbage":
                    reply = bytes(self._random.randrange(256) for _ in range(len(reply)))
                elif fault == "wrong_transaction":
                    reply = struct.pack(">H", (int.from_bytes(reply[:2], "big") + 1) & 0xFFFF) + reply[2:]
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:  # stop(): end this connection quietly (asyncio's stream
            pass  # server would log a cancelled handler as an error)
        finally:
            self._connections.discard(task)
            for stream in (writer, upstream):
                if stream is not None:
                    stream.close()
                    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                        await stream.wait_closed()


def writes_to(address: int) -> Callable[[bytes], bool]:
    """A `planned` test: a write (function 6, 16 or 23) that starts at this holding address."""
    return lambda pdu: pdu[0] in (6, 16, 23) and _written(pdu)[0] == address


def _written(pdu: bytes) -> tuple[int, int]:
    """(address, count) a write request writes; function 23 reads too, after its read fields."""
    if pdu[0] == 23:
        return struct.unpack(">HH", pdu[5:9])
    address, count = struct.unpack(">HH", pdu[1:5])
    return address, 1 if pdu[0] in (5, 6) else count


async def _frame(reader: asyncio.StreamReader) -> bytes:
    """One whole Modbus TCP frame: the MBAP header says how long it is."""
    header = await reader.readexactly(6)
    length = int.from_bytes(header[4:6], "big")
    return header + await reader.readexactly(length)
