from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from bridge.handshake import COMMAND_REGISTERS, STATUS_REGISTERS, StatusBlock
from bridge.mapping import LineMapping
from plc_sim.plc import SimulatedPlc


class PlainClient:
    """A bare pymodbus client speaking the handshake by hand, as a line controller would."""

    def __init__(self, plc: SimulatedPlc) -> None:
        self.plc = plc
        self.modbus = AsyncModbusTcpClient(plc.host, port=plc.port, timeout=2, retries=0)

    async def connect(self) -> None:
        assert await self.modbus.connect(), f"cannot connect to {self.plc.host}:{self.plc.port}"

    async def status(self) -> StatusBlock:
        reply = await self.modbus.read_input_registers(
            self.plc.kind.handshake.status_address, count=STATUS_REGISTERS, device_id=self.plc.device_id
        )
        assert not reply.isError(), reply
        return StatusBlock.from_registers(reply.registers)

    async def write_holding(self, address: int, values: list[int]) -> None:
        reply = await self.modbus.write_registers(address, values, device_id=self.plc.device_id)
        assert not reply.isError(), reply

    async def command(self, offset: int, value: int) -> None:
        assert offset < COMMAND_REGISTERS
        await self.write_holding(self.plc.kind.handshake.command_address + offset, [value])

    async def until(self, predicate: Callable[[StatusBlock], bool], timeout_s: float = 5.0) -> StatusBlock:
        """Poll the status block until `predicate` holds; fail after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while True:
                block = await self.status()
                if predicate(block):
                    return block
                await asyncio.sleep(0.005)


async def holding_but_heartbeat(plc: SimulatedPlc, count: int) -> list[int]:
    """Holding registers 0..count-1 as clients left them, the bridge's heartbeat (written on its own
    period, whatever else happens) shown as 0."""
    words = [int(w) for w in await plc.memory.read("holding", 0, count)]
    if plc.heartbeat is not None and plc.heartbeat.address < count:
        words[plc.heartbeat.address] = 0
    return words


PlcFactory = Callable[..., Awaitable[SimulatedPlc]]


@pytest.fixture
async def start_plc(ac_mapping: LineMapping) -> AsyncIterator[PlcFactory]:
    """Start simulated PLCs of the AC line on free loopback ports; all stopped at the end."""
    started: list[SimulatedPlc] = []

    async def start(station: str, *, speed: float = 0, **kw: object) -> SimulatedPlc:
        plc = SimulatedPlc(ac_mapping, station, port=0, speed=speed, seed=1, **kw)
        await plc.start()
        started.append(plc)
        return plc

    try:
        yield start
    finally:
        for plc in started:
            await plc.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[SimulatedPlc], Awaitable[PlainClient]]]:
    clients: list[PlainClient] = []

    async def make(plc: SimulatedPlc) -> PlainClient:
        client = PlainClient(plc)
        await client.connect()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.modbus.close()


NODE_DIR = Path(__file__).resolve().parent.parent / "node"


@pytest.fixture
def node_client() -> list[str]:
    node = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "node-opcua").is_dir()
    if node is None or not installed:
        missing = "node" if node is None else f"node-opcua (npm install --prefix {NODE_DIR})"
        message = f"{missing} is not installed; `make test` installs it when npm is available"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must not skip the interoperability test")
        pytest.skip(message)
    return [node, str(NODE_DIR / "interop.mjs")]
