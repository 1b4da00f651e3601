"""Poll rates per field group: a telemetry field with its own `scan_interval_s` is read at that
period, the others (and the setpoints) at the station's, over one status read per poll, against
the real simulated line."""

from __future__ import annotations

import asyncio
import copy

import pytest

from bridge.domain.events import StationScanned
from bridge.errors import MappingError
from bridge.mapping import apply_deployment, parse_mapping
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine


async def test_a_field_with_its_own_period_is_read_at_that_period(ac_data, tmp_path):
    data = copy.deepcopy(ac_data)
    data["station_types"]["press"]["telemetry"]["press_force_kn"]["scan_interval_s"] = 0.04
    mapping = parse_mapping(data)
    async with SimulatedLine(mapping, ports=dict.fromkeys(mapping.stations, 0), speed=0, seed=1) as line:
        bridge = Bridge(
            apply_deployment(mapping, line.endpoints()),
            BridgeSettings(data_dir=tmp_path / "data", telemetry_interval_s=0.5),
        )
        reads: list[frozenset[str]] = []
        scans = bridge.events.subscribe("test", StationScanned)
        await bridge.start()
        try:
            async with asyncio.timeout(10):
                while sum("press_force_kn" in r for r in reads) < 20:
                    scan = await scans.get()
                    if scan.station == "chassis":
                        reads.append(scan.read)
        finally:
            scans.close()
            await bridge.stop()
    fast = sum("press_force_kn" in r for r in reads)
    slow = sum("cycle_count" in r for r in reads)
    setpoint = sum("force_limit_kn" in r for r in reads)
    assert fast >= 20
    assert 1 <= slow <= 4  # 20 polls at 40 ms span ~0.8 s: the station's 0.5 s period comes 2 or 3 times
    assert setpoint == slow  # setpoints go with the station's own period
    link = bridge.links["chassis"]
    assert link.counters.polls_done >= fast + slow - 1


def test_a_period_is_refused_on_anything_but_telemetry(ac_data):
    data = copy.deepcopy(ac_data)
    data["station_types"]["press"]["setpoints"]["force_limit_kn"]["scan_interval_s"] = 0.1
    with pytest.raises(MappingError, match="only telemetry fields set their own poll period"):
        parse_mapping(data)
