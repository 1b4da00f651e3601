"""Telemetry published by exception: only changes reach the address space, a mapping deadband
holds back small moves, and every subscriber (with or without its own filter) sees each change."""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools

import pytest

from bridge.mapping import parse_mapping
from tests.integration.opcua_rig import opcua_rig

pytestmark = pytest.mark.slow
STATIONS = "Plant.Lines.ac_line.Stations"


class Changes:
    def __init__(self) -> None:
        self.values: dict[str, list] = {}

    def datachange_notification(self, node, value, data) -> None:
        self.values.setdefault(node.nodeid.Identifier.rsplit(".", 1)[-1], []).append(value)


async def test_changes_only_deadband_and_every_subscriber(ac_data, tmp_path):
    data = copy.deepcopy(ac_data)
    data["station_types"]["press"]["telemetry"]["press_force_kn"]["deadband"] = {"percent": 50}  # 3000 kN
    async with opcua_rig(parse_mapping(data), tmp_path / "data") as rig:
        temp = rig.node(f"{STATIONS}.test_b.Telemetry.bench_air_temp_c")
        force = rig.node(f"{STATIONS}.chassis.Telemetry.press_force_kn")
        first, second, filtered = Changes(), Changes(), Changes()
        subscriptions = [await rig.client.create_subscription(10, h) for h in (first, second, filtered)]
        await subscriptions[0].subscribe_data_change([temp, force])
        await subscriptions[1].subscribe_data_change(temp)
        await subscriptions[2].deadband_monitor(temp, 100.0)  # a client's own absolute deadband
        async with asyncio.timeout(20):
            while len(first.values.get("bench_air_temp_c", [])) < 12:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.02)
        chassis = rig.line["chassis"]
        readings = set()
        async with asyncio.timeout(10):
            while len(readings) < 3:  # the PLC's value moves …
                readings.add(await chassis.memory.read_field(chassis.fields["press_force_kn"]))
                await asyncio.sleep(0.05)
        good = [v for v in first.values["press_force_kn"] if v is not None]  # (None: before the first read)
        assert len(good) == 1  # … but never beyond the deadband: published once
        temps = first.values["bench_air_temp_c"]
        assert all(a != b for a, b in itertools.pairwise(temps))  # only changes are sent
        n = min(len(temps), len(second.values["bench_air_temp_c"]))
        assert temps[:n] == second.values["bench_air_temp_c"][:n]  # two subscribers, the same changes
        filtered_good = [v for v in filtered.values["bench_air_temp_c"] if v is not None]
        assert len(filtered_good) == 1  # the client's filter still applies
        for subscription in subscriptions:
            await subscription.delete()


async def test_history_rows_lost_to_a_full_queue_are_shown(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        dropped = rig.node("Plant.Lines.ac_line.HistoryRowsDropped")
        assert await dropped.read_value() == 0
        rig.face.history._queue = collections.deque(maxlen=1)  # our own store, made tiny for the test
        async with asyncio.timeout(10):
            while await dropped.read_value() == 0:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.02)
        assert 0 < await dropped.read_value() <= rig.face.history.dropped_rows  # it only grows
