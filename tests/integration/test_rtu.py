"""Modbus RTU for rigs: a station on a serial line, end to end over a virtual serial pair (socat),
with the same handshake, retries and diagnostics as over TCP."""

from __future__ import annotations

import asyncio
import copy
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from bridge.domain.model import OrderState
from bridge.errors import MappingError
from bridge.handshake import STATUS_REGISTERS, PlcState, StatusBlock
from bridge.mapping import apply_deployment, parse_mapping
from bridge.mapping.model import Endpoint, SerialLine
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from tests.conftest import AC_LINE
from tests.integration.orders import run_orders

pytestmark = pytest.mark.skipif(
    shutil.which("socat") is None and not __import__("os").environ.get("CI"),
    reason="socat is not installed (make tools installs it)",
)


@pytest.fixture
def serial_pair(tmp_path):
    """Two connected pseudo-terminals: (the bridge's end, the PLC's end)."""
    bridge_end, plc_end = tmp_path / "bridge-tty", tmp_path / "plc-tty"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={bridge_end}", f"pty,raw,echo=0,link={plc_end}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (bridge_end.exists() and plc_end.exists()):  # socat makes them; bounded
            assert time.monotonic() < deadline, "socat made no serial pair"
            time.sleep(0.02)
        yield str(bridge_end), str(plc_end)
    finally:
        socat.terminate()
        socat.wait(5)


async def test_a_station_on_a_serial_line_runs_its_steps_once(ac_mapping, serial_pair, tmp_path):
    bridge_end, plc_end = serial_pair
    ports = dict.fromkeys(ac_mapping.stations, 0)
    # A pseudo-terminal refuses parity bits (EINVAL): no parity here; real lines default to even.
    plc_line = SerialLine(device=plc_end, baudrate=115200, parity="N")
    bridge_line = SerialLine(device=bridge_end, baudrate=115200, parity="N")
    async with SimulatedLine(ac_mapping, ports=ports, speed=0, seed=5, serial={"pack": plc_line}) as line:
        endpoints = line.endpoints()
        assert endpoints["pack"].serial == plc_line
        endpoints["pack"] = Endpoint(device_id=line["pack"].device_id, serial=bridge_line)
        settings = BridgeSettings(data_dir=tmp_path, telemetry_interval_s=0.2, request_timeout_s=0.5)
        bridge = Bridge(apply_deployment(ac_mapping, endpoints), settings)
        await bridge.start()
        try:
            states = [order.state for order in await run_orders(bridge, "RTU", 3, timeout_s=60)]
            link = bridge.links["pack"]
            async with asyncio.timeout(5):
                while not link.telemetry:  # noqa: ASYNC110 - polled over the serial line, bounded
                    await asyncio.sleep(0.05)
            counters, telemetry = link.counters, dict(link.telemetry)
        finally:
            await bridge.stop()
    assert states == [OrderState.COMPLETED] * 3
    assert sorted(line["pack"].executed.values()) == [1, 1, 1]  # each step once, over RTU
    assert line["pack"].status.reexecuted_count == 0
    assert counters.requests > 3 * 5
    assert counters.outages == 0
    assert "label_stock" in telemetry  # telemetry is polled over the serial line too


def test_two_stations_cannot_share_a_serial_line(ac_data):
    data = copy.deepcopy(ac_data)
    for station in ("coil", "pack"):
        data["stations"][station]["endpoint"] = {"serial": {"device": "/dev/ttyUSB0"}, "device_id": 1}
    refusal = r"stations\.pack\.endpoint\.serial\.device: /dev/ttyUSB0 is station coil"
    with pytest.raises(MappingError, match=refusal):
        parse_mapping(data)


async def test_plc_sim_serves_a_station_over_a_serial_port(serial_pair, tmp_path):
    bridge_end, plc_end = serial_pair
    deployment = tmp_path / "deployment.yaml"
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plc_sim", "--mapping", str(AC_LINE), "--speed", "0", "--ephemeral",
        "--serial", f"pack={plc_end}:115200:N", "--write-deployment", str(deployment),
        "--log-level", "warning",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while not (deployment.exists() and deployment.read_text()):  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.05)
        pack = yaml.safe_load(deployment.read_text())["stations"]["pack"]
        line = {"device": plc_end, "baudrate": 115200, "parity": "N", "stopbits": 1, "bytesize": 8}
        assert pack["serial"] == line
        client = AsyncModbusSerialClient(
            bridge_end, framer=FramerType.RTU, baudrate=115200, parity="N", timeout=2
        )  # an independent RTU client on the other end of the pair
        assert await client.connect()
        try:
            reply = await client.read_input_registers(0, count=STATUS_REGISTERS, device_id=pack["device_id"])
        finally:
            client.close()
        assert not reply.isError()
        assert StatusBlock.from_registers(reply.registers).state == PlcState.IDLE
    finally:
        sim.terminate()
        await sim.wait()
