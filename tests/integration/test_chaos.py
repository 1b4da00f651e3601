"""Orders through a faulty network: a seeded fault-injecting proxy in front of every PLC (lost
replies after the PLC acted, dropped requests, resets, late replies, garbage, wrong transaction
ids, busy answers). Every step runs exactly once by the PLCs' own counts, nothing outside the
mapping is written, and no link wedges (all orders end within the time limit)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest
import yaml

from bench.chaos import chaos, declared_writes
from bridge.domain.model import OrderState
from bridge.errors import StationError
from bridge.handshake import Command, PlcState
from bridge.mapping import apply_deployment
from bridge.mapping.model import Endpoint
from bridge.modbus import ModbusStationLink
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from plc_sim.proxy import ISSUE_12_MIX, FaultMix, FaultyLink, writes_to
from tests.conftest import AC_LINE
from tests.integration.orders import run_orders

pytestmark = pytest.mark.slow
CAPACITIES = (9000, 12000, 18000, 24000)


@pytest.mark.parametrize("severity", [1, 2])
async def test_orders_survive_a_faulty_network_exactly_once(ac_mapping, tmp_path, severity):
    mix = ISSUE_12_MIX.scaled(severity)
    mix = type(mix)(**{**mix.__dict__, "delay_s": 0.6})  # late enough to outlast a try
    ports = dict.fromkeys(ac_mapping.stations, 0)
    async with SimulatedLine(ac_mapping, ports=ports, speed=0, seed=3) as line:
        proxies = {
            name: FaultyLink(("127.0.0.1", plc.port), mix, seed=100 * severity + i)
            for i, (name, plc) in enumerate(line.plcs.items())
        }
        for proxy in proxies.values():
            await proxy.start()
        endpoints = {
            name: Endpoint(port=p.port, device_id=line[name].device_id) for name, p in proxies.items()
        }
        settings = BridgeSettings(
            data_dir=tmp_path, telemetry_interval_s=0.2, request_timeout_s=0.25, backoff_max_s=0.2
        )
        bridge = Bridge(apply_deployment(ac_mapping, endpoints), settings)
        await bridge.start()
        try:
            # a wedged link would hold its orders past the timeout
            orders = await run_orders(
                bridge, "C", 20, timeout_s=150, options=lambda i: {"capacity_btu": CAPACITIES[i % 4]}
            )
        finally:
            await bridge.stop()
            for proxy in proxies.values():
                await proxy.stop()
        for order in orders:
            assert order.state == OrderState.COMPLETED, (order.order_id, order.state, order.result_code)
        for name, plc in line.plcs.items():
            assert plc.executed, name
            assert set(plc.executed.values()) == {1}, (name, plc.executed)  # every step exactly once
            assert plc.status.reexecuted_count == 0
            allowed = declared_writes(ac_mapping, name)
            for code, address, count in proxies[name].writes:
                table = "coil" if code in (5, 15) else "holding"
                assert {(table, address + i) for i in range(count)} <= allowed, (name, code, address, count)
        injected = sum(sum(p.injected.values()) for p in proxies.values())
        assert injected > 20, [dict(p.injected) for p in proxies.values()]
        stale = sum(p.injected["wrong_transaction"] for p in proxies.values())
        counted = sum(link.counters.stale_replies for link in bridge.links.values())
        assert counted >= (stale > 0), (stale, counted)  # replies to another request are seen as such


@pytest.mark.timeout(400)  # 40-90 s here; bounded by its rounds' own time limits
async def test_fifty_orders_through_faults_and_sigkills_run_every_step_once(tmp_path):
    """The bridge as its own process behind the faulty proxies, SIGKILLed at random while it works
    and started again on its journal (bench/chaos.py, what `make chaos` soaks): from the PLCs' own
    counts every step ran once, nothing outside the mapping was written, every order ended."""
    mix = ISSUE_12_MIX
    mix = type(mix)(**{**mix.__dict__, "delay_s": 0.6})
    report = await chaos(
        tmp_path, rounds=5, round_size=10, mix=mix, seed=7, kill_after_s=(1.5, 3.0), round_timeout_s=120,
        kills_per_round=2,
    )  # fmt: skip
    assert len(report.orders) == 50
    assert report.unexplained() == []
    assert report.states()["completed"] == 50, report.states()
    assert report.duplicates == 0, report.executed
    assert report.reexecuted == 0
    assert report.undeclared_writes == []
    assert report.steps == 50 * 7
    assert report.kills >= 3, report.kills
    assert sum(report.faults.values()) > 20, report.faults


def test_plc_sim_puts_a_faulty_network_in_front_of_every_plc_through_the_deployment(tmp_path):
    """`plc-sim --network-faults 2` serves proxies where its PLCs were, names them in the deployment
    file, and logs each write it forwards; a bridge on that file completes its orders."""
    deployment = tmp_path / "deployment.yaml"
    (tmp_path / "orders.json").write_text(
        json.dumps([{"order_id": f"N-{i}", "product": "AC-W", "options": {}} for i in range(3)])
    )
    sim_log = (tmp_path / "sim.log").open("w")
    sim = subprocess.Popen(
        [sys.executable, "-m", "plc_sim", "--mapping", str(AC_LINE), "--speed", "0", "--ephemeral",
         "--network-faults", "2", "--network-seed", "5", "--write-deployment", str(deployment)],
        stdout=subprocess.PIPE, stderr=sim_log, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        table = [sim.stdout.readline() for _ in range(9)]  # header and one line per station
        stations = yaml.safe_load(deployment.read_text())["stations"]
        listed = {line.split()[0]: int(line.split()[2].rsplit(":", 1)[1]) for line in table[1:]}
        assert listed == {name: ep["port"] for name, ep in stations.items()}  # the proxies, named once
        bridge = subprocess.run(
            [sys.executable, "-m", "bridge", "run", "--mapping", str(AC_LINE),
             "--deployment", str(deployment), "--data-dir", str(tmp_path / "data"),
             "--submit", str(tmp_path / "orders.json"), "--exit-when-idle", "--no-opcua",
             "--telemetry-interval", "0.5", "--request-timeout", "0.5", "--log-level", "warning"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert bridge.returncode == 0, bridge.stderr[-3000:]
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(10)
        sim_log.close()
        if sim.stdout is not None:
            sim.stdout.close()
    logged = (tmp_path / "sim.log").read_text()
    assert "a fault-injecting proxy in front of every PLC" in logged
    assert logged.count("proxy_write") >= 3 * 7 * 3  # parameters, start and acknowledge of every step


def parameter_block_start(mapping, station: str) -> int:
    fields = mapping.resolved_fields(station)
    names = mapping.station_type(station).parameters
    return min(fields[n].address for n in names if fields[n].table == "holding")


@pytest.mark.parametrize("fault", ["lost_reply", "dropped_request", "reset"])
@pytest.mark.parametrize("point", ["parameters", "start", "acknowledge"])
async def test_each_retry_point_of_the_exchange_runs_the_step_once(ac_mapping, tmp_path, point, fault):
    """One fault aimed at one write of the exchange (docs/handshake.md): the link tries it again,
    and the PLC still runs the step exactly once (a lost reply means the PLC already acted)."""
    command = ac_mapping.station_type("coil").handshake.command_address
    address = {
        "parameters": parameter_block_start(ac_mapping, "coil"),
        "start": command + Command.START_SEQ,
        "acknowledge": command + Command.ACK_SEQ,
    }[point]
    ports = dict.fromkeys(ac_mapping.stations, 0)
    async with SimulatedLine(ac_mapping, ports=ports, speed=0, seed=3) as line:
        coil = line["coil"]
        proxy = FaultyLink(("127.0.0.1", coil.port), FaultMix(), planned=[(fault, writes_to(address))])
        await proxy.start()
        endpoints = {**line.endpoints(), "coil": Endpoint(port=proxy.port, device_id=coil.device_id)}
        settings = BridgeSettings(data_dir=tmp_path, telemetry_interval_s=0, request_timeout_s=0.25)
        bridge = Bridge(apply_deployment(ac_mapping, endpoints), settings)
        await bridge.start()
        try:
            states = [order.state for order in await run_orders(bridge, "R", 2)]
            retries = bridge.links["coil"].counters.retries
        finally:
            await bridge.stop()
            await proxy.stop()
    assert proxy.injected == {fault: 1}  # the fault hit its write
    assert retries >= 1
    assert states == [OrderState.COMPLETED] * 2
    assert sorted(coil.executed.values()) == [1, 1]  # each step once
    assert coil.status.reexecuted_count == 0


async def test_a_request_that_never_ends_is_noticed_and_the_link_rebuilt(ac_mapping):
    """The watchdog: a request whose await never returns (the cancel of its time limit swallowed,
    as a library bug once did) holds the link; the next request notices once it has been held
    longer than any request can take, gives the link a new connection and fails with the reason;
    the one after works."""
    async with SimulatedLine(ac_mapping, ports=dict.fromkeys(ac_mapping.stations, 0), speed=0) as line:
        link = ModbusStationLink(apply_deployment(ac_mapping, line.endpoints()), "coil", timeout_s=0.1)
        await link.status()
        holding, release = asyncio.Event(), asyncio.Event()

        async def never_ends(_client):
            holding.set()
            while not release.is_set():
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:  # swallowed: the time limit cannot end it
                    continue
            raise ConnectionError("released by the test")

        stuck = asyncio.create_task(link._conn.request("stuck request", never_ends))
        await holding.wait()
        began = asyncio.get_running_loop().time()
        with pytest.raises(StationError, match="no progress; rebuilt"):
            await link.status()
        waited = asyncio.get_running_loop().time() - began
        assert link._conn.longest_request_s() <= waited < link._conn.longest_request_s() + 2
        assert link.counters.rebuilds == 1
        status = await link.status()  # a new connection, while the stuck request still holds the old
        assert status.state == PlcState.IDLE
        release.set()
        with pytest.raises(StationError):
            await stuck
        assert (await link.status()).state == PlcState.IDLE  # the stuck one closed only its own
        assert link.counters.reconnects == 1
        await link.close()
