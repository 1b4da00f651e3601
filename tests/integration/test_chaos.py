"""Orders through a faulty network: a seeded fault-injecting proxy in front of every PLC (lost
replies after the PLC acted, dropped requests, resets, late replies, garbage, wrong transaction
ids, busy answers). Every step runs exactly once by the PLCs' own counts, nothing outside the
mapping is written, and no link wedges (all orders end within the time limit)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.domain.model import OrderState
from bridge.handshake import COMMAND_REGISTERS
from bridge.mapping import apply_deployment
from bridge.mapping.model import Endpoint
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from plc_sim.proxy import ISSUE_12_MIX, FaultyLink

pytestmark = pytest.mark.slow
CAPACITIES = (9000, 12000, 18000, 24000)


def declared_writes(mapping, station: str) -> set[tuple[str, int]]:
    """(table, address) the bridge may write on a station: command block, parameters, setpoints."""
    kind = mapping.station_type(station)
    fields = mapping.resolved_fields(station)
    allowed = {("holding", kind.handshake.command_address + i) for i in range(COMMAND_REGISTERS)}
    for name in (*kind.parameters, *kind.setpoints):
        f = fields[name]
        allowed |= {(f.table, f.address + i) for i in range(f.register_count)}
    return allowed


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
            for i in range(20):
                await bridge.submit(f"C-{i}", "AC-W", {"capacity_btu": CAPACITIES[i % 4]})
            async with asyncio.timeout(150):  # a wedged link would hold its orders past this
                await bridge.wait_idle()
            orders = [bridge.get(f"C-{i}") for i in range(20)]
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
