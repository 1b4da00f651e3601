"""The bridge's heartbeat: a PLC that watches it refuses a new start once the bridge is gone, says
why, and takes work again when a bridge is back (docs/plc-guide.md, "The heartbeat")."""

from __future__ import annotations

import asyncio

import pytest

from bridge.domain.model import OrderState
from bridge.errors import StationError
from bridge.handshake import PlcState, ResultCode
from bridge.mapping import apply_deployment, parse_mapping
from bridge.mapping.model import Endpoint
from bridge.modbus import ModbusStationLink
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from plc_sim.proxy import FaultMix, FaultyLink, writes_to
from tests.integration.conftest import PlainClient


def quick_heartbeat(ac_data: dict) -> dict:
    for kind in ac_data["station_types"].values():
        kind.setdefault("handshake", {})["heartbeat"] = {"address": 3, "period_s": 0.05, "timeout_s": 0.4}
    return ac_data


async def test_a_plc_refuses_a_start_while_the_bridge_is_gone_and_the_line_resumes(ac_data, tmp_path):
    mapping = parse_mapping(quick_heartbeat(ac_data), source="test.yaml")
    settings = BridgeSettings(data_dir=tmp_path / "data", telemetry_interval_s=0, backoff_max_s=0.2)
    async with SimulatedLine(mapping, ports=dict.fromkeys(mapping.stations, 0), speed=0, seed=2) as line:
        deployed = apply_deployment(mapping, line.endpoints())
        chassis = line["chassis"]
        async with asyncio.timeout(30):
            async with Bridge(deployed, settings) as bridge:
                await chassis.wait_for(lambda p: p.watching_heartbeat)
                await bridge.submit("BEFORE", "AC-W", {})
                await bridge.wait_idle()
                assert bridge.get("BEFORE").state == OrderState.COMPLETED
                assert all(plc.bridge_lost == "" for plc in (line[s] for s in mapping.stations))
            # the bridge is gone: its heartbeat stops
            await chassis.wait_for(lambda p: p.bridge_lost != "", timeout_s=5)
            assert "no bridge heartbeat for" in chassis.bridge_lost
            assert "(holding 3)" in chassis.bridge_lost
            stray = PlainClient(chassis)  # a start that comes anyway: a stale master, a test panel
            await stray.connect()
            seq = chassis.status.accepted_seq + 1
            await stray.command(0, seq)
            refused = await stray.until(lambda s: s.done_seq == seq)
            stray.modbus.close()
            assert refused.result_code == ResultCode.BRIDGE_LOST
            assert chassis.last_reject_reason == chassis.bridge_lost
            # a bridge is back (same journal): the heartbeat moves, the PLC takes work again
            async with Bridge(deployed, settings) as bridge:
                await chassis.wait_for(lambda p: p.bridge_lost == "", timeout_s=5)
                await bridge.submit("AFTER", "AC-W", {})
                await bridge.wait_idle()
                after = bridge.get("AFTER")
                assert after.state == OrderState.COMPLETED, after
                assert [st.result_code for st in after.steps] == [0] * 7
            assert chassis.status.state == PlcState.IDLE


async def test_a_beat_whose_answer_was_lost_is_not_written_again_as_if_new(ac_mapping):
    """A heartbeat write that reached the PLC but whose answer never came back fails on the bridge's
    side; the next beat must still change the register, or the PLC counts the bridge gone three
    periods later while the bridge believes it beats (a start refused with bridge_lost under a lossy
    network: the chaos test at severity 2 once faulted an order so)."""
    address = ac_mapping.station_type("coil").handshake.heartbeat.address
    async with SimulatedLine(ac_mapping, ports=dict.fromkeys(ac_mapping.stations, 0), speed=0) as line:
        coil = line["coil"]
        proxy = FaultyLink(("127.0.0.1", coil.port), FaultMix())
        await proxy.start()
        deployed = apply_deployment(ac_mapping, {"coil": Endpoint(port=proxy.port, device_id=coil.device_id)})
        link = ModbusStationLink(deployed, "coil", timeout_s=0.1, backoff_max_s=0.05)
        try:
            await link.beat()
            (before,) = await coil.memory.read("holding", address, 1)
            # the PLC takes the next value, its answer is lost, and every try after it is dropped
            heartbeat, retries = writes_to(address), link.policy.attempts - 1
            proxy.planned = [("lost_reply", heartbeat)] + [("dropped_request", heartbeat)] * retries
            with pytest.raises(StationError):
                await link.beat()
            (landed,) = await coil.memory.read("holding", address, 1)
            assert landed != before  # the lost answer's write did land
            async with asyncio.timeout(10):
                while True:  # the link may be backing off after the failure
                    try:
                        await link.beat()
                        break
                    except StationError:
                        await asyncio.sleep(0.05)
            (after,) = await coil.memory.read("holding", address, 1)
            assert after != landed, (before, landed, after)
        finally:
            await link.close()
            await proxy.stop()
