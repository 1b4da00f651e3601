"""The engine against the real simulated line on loopback: exactly once, faults, cancel, bad input."""

from __future__ import annotations

import asyncio
import copy
import random
from collections import Counter

import pytest

from bridge.domain.model import OrderState, StepPhase
from bridge.errors import (
    CodecError,
    MappingError,
    MappingIncompatible,
    OrderRejected,
    ParameterMismatch,
    UnknownOrder,
)
from bridge.handshake import PlcState, ResultCode
from bridge.mapping import LineMapping, apply_deployment, parse_mapping
from bridge.modbus import ModbusStationLink
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from tests.conftest import AC_LINE
from tests.integration.conftest import holding_but_heartbeat

CAPACITY_TABLE = {  # ac_line.md: chassis_size, coil_rows, fin_pitch_mm, charge_g
    9000: (1, 2, 1.5, 520), 12000: (1, 2, 1.5, 680), 18000: (2, 3, 1.4, 980), 24000: (3, 4, 1.4, 1250),
}  # fmt: skip
COLOR = {"white": 1, "champagne_gold": 2, "graphite": 3, "ocean_blue": 4}
REGION = {"eu_230v_50hz": (230, 50, 1), "na_115v_60hz": (115, 60, 2), "cn_220v_50hz": (220, 50, 3)}


@pytest.fixture
async def line(ac_mapping):
    async with SimulatedLine(
        ac_mapping, ports=dict.fromkeys(ac_mapping.stations, 0), speed=0, seed=3
    ) as line:
        yield line


@pytest.fixture
async def start_bridge(ac_mapping, line, tmp_path):
    bridges: list[Bridge] = []

    async def start(mapping: LineMapping = ac_mapping, **settings) -> Bridge:
        mapping = apply_deployment(mapping, line.endpoints())
        defaults = {"data_dir": tmp_path / "data", "telemetry_interval_s": 0, "backoff_max_s": 0.2}
        bridge = Bridge(mapping, BridgeSettings(**{**defaults, **settings}))
        await bridge.start()
        bridges.append(bridge)
        return bridge

    try:
        yield start
    finally:
        for bridge in bridges:
            await bridge.stop()


async def until_idle(bridge: Bridge, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        await bridge.wait_idle()


async def until_state(bridge: Bridge, order_id: str, predicate, timeout_s: float = 10):
    async with asyncio.timeout(timeout_s):
        while not predicate(bridge.get(order_id)):  # noqa: ASYNC110 - polls state, bounded by the timeout
            await asyncio.sleep(0.005)
    return bridge.get(order_id)


def expected_parameters(order, unit) -> dict[str, dict]:
    """What ac_line.md says each station type gets, computed here independently of the mapping."""
    o = order.options
    size, rows, pitch, charge = CAPACITY_TABLE[o["capacity_btu"]]
    index = sorted(CAPACITY_TABLE).index(o["capacity_btu"])
    volts, hertz, region_code = REGION[o["region"]]
    return {
        "press": {"chassis_size": size},
        "brazing": {"coil_rows": rows, "fin_pitch_mm": pitch},
        "compressor_fit": {"compressor_model": (100 if o["compressor"] == "fixed_speed" else 200) + index,
                           "torque_nm": 12.5},
        "charging": {"charge_g": charge, "tolerance_g": 10},
        "panel_fit": {"color_code": COLOR[o["panel_color"]],
                      "finish": 1 if o["panel_finish"] == "matte" else 2,
                      "wifi_module": o["wifi_module"], "engraving": o["engraving"]},
        "run_test": {"supply_voltage_v": volts, "supply_hz": hertz,
                     "expected_capacity_w": pytest.approx(o["capacity_btu"] * 0.29307), "duration_s": 60},
        "pack": {"order_ref": order.order_id, "unit_serial": unit.serial, "region_code": region_code},
    }  # fmt: skip


def random_options(rng: random.Random) -> dict:
    return {
        "capacity_btu": rng.choice(sorted(CAPACITY_TABLE)),
        "compressor": rng.choice(["fixed_speed", "inverter"]),
        "panel_color": rng.choice(sorted(COLOR)),
        "panel_finish": rng.choice(["matte", "gloss"]),
        "wifi_module": rng.choice([True, False]),
        "engraving": rng.choice(["", "ANNA", "Li Wei 2026", "x" * 16]),
        "region": rng.choice(sorted(REGION)),
    }


async def test_fifty_mixed_orders_run_every_step_exactly_once(ac_mapping, line, start_bridge):
    bridge = await start_bridge()
    rng = random.Random(50)
    for i in range(50):
        options = {k: v for k, v in random_options(rng).items() if rng.random() < 0.8}  # some use defaults
        await bridge.submit(f"ORD-{i:03}", "AC-W", options, quantity=1 + (i % 10 == 0))
    await until_idle(bridge)

    orders = [bridge.get(f"ORD-{i:03}") for i in range(50)]
    units = sum(o.quantity for o in orders)
    assert units == 55
    at_station: Counter[str] = Counter()
    for order in orders:
        assert order.state == OrderState.COMPLETED, order
        assert order.units_done == order.quantity
        for unit in order.units:
            steps = [s for s in order.steps if s.unit_index == unit.index]
            assert [s.route_index for s in steps] == list(range(7))
            expected = expected_parameters(order, unit)
            for step in steps:
                assert step.phase == StepPhase.CLOSED
                assert step.result_code == 0
                assert step.parameters == expected[ac_mapping.stations[step.station].type]
                at_station[step.station] += 1
    for name, plc in line.plcs.items():
        assert set(plc.executed.values()) == {1}, f"{name} ran a step twice: {plc.executed}"
        assert sum(plc.executed.values()) == at_station[name]
        assert plc.status.reexecuted_count == 0
    for name in ("chassis", "coil", "compressor", "charge", "panel", "pack"):
        assert at_station[name] == units
    assert at_station["test_a"] + at_station["test_b"] == units
    assert at_station["test_a"] > 0
    assert at_station["test_b"] > 0


async def test_rejected_step_faults_only_that_order(line, start_bridge):
    await line["coil"].set_fault("reject_next", 7)
    bridge = await start_bridge()
    for i in range(4):
        await bridge.submit(f"R{i}", "AC-W", {})
    await until_idle(bridge)
    faulted = bridge.get("R0")
    assert (faulted.state, faulted.fault_station, faulted.result_code) == (OrderState.FAULTED, "coil", 7)
    assert [s.station for s in faulted.steps] == ["chassis", "coil"]
    assert all(bridge.get(f"R{i}").state == OrderState.COMPLETED for i in (1, 2, 3))
    assert sum(line["compressor"].executed.values()) == 3


async def test_cancel_before_and_during_a_run(line, start_bridge):
    chassis = line["chassis"]
    await chassis.set_fault("stall", 1)
    bridge = await start_bridge()
    await bridge.submit("RUNNING", "AC-W", {})
    await bridge.submit("WAITING", "AC-W", {})
    await chassis.wait_for(lambda plc: plc.status.state == PlcState.BUSY)

    waiting = await bridge.cancel("WAITING")
    assert waiting.state == OrderState.CANCELLED
    running = await bridge.cancel("RUNNING")
    assert running.state == OrderState.CANCELLED
    await until_idle(bridge)
    running = bridge.get("RUNNING")
    assert [(s.station, s.result_code) for s in running.steps] == [("chassis", ResultCode.ABORTED)]
    assert bridge.get("WAITING").steps == []
    assert sum(chassis.executed.values()) == 1
    assert sum(line["coil"].executed.values()) == 0
    assert (await bridge.cancel("RUNNING")).state == OrderState.CANCELLED  # idempotent
    with pytest.raises(UnknownOrder, match="order_id: no order 'NOPE'"):
        await bridge.cancel("NOPE")


async def test_connection_dropped_mid_step(line, start_bridge):
    charge = line["charge"]
    await charge.set_fault("stall", 1)
    bridge = await start_bridge(request_timeout_s=0.3)
    await bridge.submit("DROP", "AC-W", {"capacity_btu": 24000})
    await charge.wait_for(lambda plc: plc.status.state == PlcState.BUSY)
    await charge.set_fault("drop_next", 2)  # the next two requests lose the connection
    charge.drop_connections()
    await charge.wait_for(lambda plc: plc.faults.drop_next == 0, timeout_s=10)
    await charge.set_fault("stall", 0)
    await until_idle(bridge)
    order = bridge.get("DROP")
    assert order.state == OrderState.COMPLETED
    assert set(charge.executed.values()) == {1}
    assert sum(charge.executed.values()) == 1
    assert bridge.links["charge"].counters.reconnects >= 1
    assert abs(order.steps[3].results["actual_charge_g"] - 1250) <= 10


async def test_station_that_stalls_times_out_the_step(line, start_bridge):
    await line["compressor"].set_fault("stall", 1)
    bridge = await start_bridge(step_timeout_s=0.3)
    await bridge.submit("SLOW", "AC-W", {})
    await until_idle(bridge)
    order = bridge.get("SLOW")
    assert (order.state, order.fault_station, order.result_code) == (
        OrderState.FAULTED, "compressor", ResultCode.STEP_TIMEOUT)  # fmt: skip
    assert sum(line["compressor"].executed.values()) == 1


async def test_station_down_at_start_then_back(ac_mapping, line, start_bridge):
    pack = line["pack"]
    await pack.set_fault("exception_code", 4)  # answers every request with 'device failure'
    bridge = await start_bridge()
    await bridge.submit("LATE", "AC-W", {})
    tested = {"test_a", "test_b"}
    await until_state(bridge, "LATE", lambda o: any(s.station in tested and s.phase == StepPhase.CLOSED
                                                    for s in o.steps))  # fmt: skip
    assert bridge.links["pack"].counters.errors > 0
    await pack.set_fault("exception_code", 0)
    await until_idle(bridge)
    assert bridge.get("LATE").state == OrderState.COMPLETED
    assert sum(pack.executed.values()) == 1


@pytest.mark.parametrize("read_write_registers", [True, False], ids=["function-23", "write-then-read"])
async def test_read_back_mismatch_never_starts_the_step(ac_data, line, start_bridge, read_write_registers):
    ac_data["stations"]["chassis"]["link"] = {"read_write_registers": read_write_registers}
    await line["chassis"].set_fault("corrupt_next", 1)
    bridge = await start_bridge(parse_mapping(ac_data, source="test"))
    await bridge.submit("BENT", "AC-W", {})
    await until_idle(bridge)
    order = bridge.get("BENT")
    assert (order.state, order.fault_station, order.result_code) == (
        OrderState.FAULTED, "chassis", ResultCode.READBACK_MISMATCH)  # fmt: skip
    assert sum(line["chassis"].executed.values()) == 0
    writes = {code for code, address in line["chassis"].requests if address == 100}
    assert writes == ({23} if read_write_registers else {16, 3})


async def test_setpoint_is_written_read_back_and_followed(line, start_bridge):
    bridge = await start_bridge(telemetry_interval_s=0.02)
    coil = line["coil"]
    await bridge.write_setpoint("coil", "furnace_setpoint_c", 630.5)
    assert await coil.memory.read_field(coil.fields["furnace_setpoint_c"]) == pytest.approx(630.5)
    assert bridge.links["coil"].setpoints["furnace_setpoint_c"] == 630.5
    await bridge.write_setpoint("pack", "label_printer_enabled", False)
    assert await line["pack"].memory.read("coil", 10, 1) == [False]
    async with asyncio.timeout(5):  # the simulated furnace settles around its new setpoint
        while not 626 <= bridge.links["coil"].telemetry.get("furnace_temp_c", 0) <= 635:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("station", "name", "value", "reason"),
    [
        ("coil", "furnace_setpoint_c", 700, "setpoint furnace_setpoint_c: 700 is above the maximum 650"),
        ("test_a", "test_profile", "turbo", "setpoint test_profile: 'turbo' is not one of standard"),
        ("pack", "label_printer_enabled", 1, "setpoint label_printer_enabled: bool needs true or false"),
        ("charge", "charge_rate_g_s", "fast", "setpoint charge_rate_g_s: float32 needs a number"),
        ("coil", "coil_rows", 3, "station coil has no setpoint 'coil_rows'"),
    ],
)
async def test_bad_setpoint_is_refused_before_anything_is_written(
    line, start_bridge, station, name, value, reason
):
    bridge = await start_bridge(heartbeat=False)  # counts requests: the heartbeat's would be among them
    writes: list[str] = []
    line[station].observer = lambda event, _seq: writes.append(event)
    requests = bridge.links[station].counters.requests
    with pytest.raises(CodecError, match=reason):
        await bridge.write_setpoint(station, name, value)
    assert bridge.links[station].counters.requests == requests  # not one request went out
    assert writes == []


async def test_setpoint_altered_by_the_plc_is_a_mismatch(line, start_bridge):
    await line["chassis"].set_fault("clamp_setpoints", 1)
    bridge = await start_bridge()
    writes: list[str] = []
    line["chassis"].observer = lambda event, _seq: writes.append(event)
    with pytest.raises(ParameterMismatch, match="force_limit_kn"):
        await bridge.write_setpoint("chassis", "force_limit_kn", 300)
    # the observer sees writes (and reads: the engine's idle status poll may come between), so the
    # refusals above see none
    assert [event for event in writes if event.endswith("_written")] == ["setpoints_written"]
    assert "setpoint read-back mismatch" in bridge.links["chassis"].counters.last_error


async def test_reloaded_derivations_apply_to_new_orders_only(line, start_bridge, tmp_path):
    mapping_file, deployment = tmp_path / "line.yaml", tmp_path / "deployment.yaml"
    mapping_file.write_text(AC_LINE.read_text())
    line.write_deployment(deployment)
    bridge = await start_bridge(mapping_file=mapping_file, deployment_file=deployment)
    await line["chassis"].set_fault("stall", 1)  # OLD is accepted but waits at the first station
    await bridge.submit("OLD", "AC-W", {})
    await until_state(bridge, "OLD", lambda o: o.state == OrderState.RUNNING)

    mapping_file.write_text(AC_LINE.read_text().replace("12000: 680,", "12000: 700,"))
    assert await bridge.reload_mapping() == ["products.AC-W.parameters.charging.charge_g.table.12000"]
    await bridge.submit("NEW", "AC-W", {})
    await line["chassis"].set_fault("stall", 0)
    await until_idle(bridge)
    charged = {
        s.order_id: s.parameters["charge_g"]
        for order_id in ("OLD", "NEW")
        for s in bridge.get(order_id).steps
        if s.station == "charge"
    }
    assert charged == {"OLD": 680, "NEW": 700}
    assert bridge.journal.load_order("OLD").units[0].parameters["charging"]["charge_g"] == 680


async def test_reload_that_needs_a_restart_changes_nothing(line, start_bridge, tmp_path):
    mapping_file, deployment = tmp_path / "line.yaml", tmp_path / "deployment.yaml"
    text = AC_LINE.read_text()
    mapping_file.write_text(text.replace("12000: 680,", "12000: 700,").replace(
        "charge_g: {address: 100,", "charge_g: {address: 110,"))  # fmt: skip
    line.write_deployment(deployment)
    bridge = await start_bridge(mapping_file=mapping_file, deployment_file=deployment)
    running = bridge.mapping
    with pytest.raises(MappingIncompatible) as refused:
        await bridge.reload_mapping()
    assert [str(issue) for issue in refused.value.issues] == [
        "station_types.charging.parameters.charge_g.address: differs from the running mapping;"
        " only products.<product>.parameters may change without a restart"
    ]
    assert bridge.mapping is running
    assert bridge.engine.mapping is running
    mapping_file.write_text("line: {name: broken}\n")
    with pytest.raises(MappingError, match="stations"):
        await bridge.reload_mapping()
    assert bridge.mapping is running


@pytest.mark.parametrize(
    ("request_", "field", "reason"),
    [
        ({"options": {"colour": "red"}}, "options.colour", "unknown option"),
        ({"options": {"wifi_module": "yes"}}, "options.wifi_module", "must be true or false"),
        ({"options": {"capacity_btu": 10000}}, "options.capacity_btu", "must be one of 9000"),
        ({"options": {"engraving": "x" * 17}}, "options.engraving", "at most 16 characters"),
        ({"options": {"engraving": "naïve"}}, "options.engraving", "printable ascii"),
        ({"order_id": "bad id!"}, "order_id", "letters, digits"),
        ({"order_id": "x" * 33}, "order_id", "1-32 characters"),
        ({"quantity": 0}, "quantity", "must be 1 to 50"),
        ({"quantity": 51}, "quantity", "must be 1 to 50"),
        ({"quantity": "2"}, "quantity", "whole number"),
        ({"product": "AC-X"}, "product", "unknown product"),
        ({"options": ["capacity_btu"]}, "options", "object of option values"),
    ],
)
async def test_malformed_order_is_rejected_and_nothing_is_written(
    line, start_bridge, request_, field, reason
):
    bridge = await start_bridge()
    order = {"order_id": "GOOD-1", "product": "AC-W", "options": {}, "quantity": 1, **request_}
    with pytest.raises(OrderRejected) as info:
        await bridge.submit(order["order_id"], order["product"], order["options"], quantity=order["quantity"])
    assert info.value.field == field
    assert reason in info.value.reason
    assert bridge.get(order["order_id"]) is None if isinstance(order["order_id"], str) else True
    for name, plc in line.plcs.items():
        holding = await holding_but_heartbeat(plc, 130)
        assert not any(holding), f"{name} holding registers were written: {holding}"
        assert not plc.executed


async def test_submit_is_idempotent(line, start_bridge):
    bridge = await start_bridge()
    first = await bridge.submit("SAME", "AC-W", {"panel_color": "graphite"}, quantity=2)
    again = await bridge.submit(
        "SAME", "AC-W", {"panel_color": "graphite", "panel_finish": "matte"}, quantity=2
    )
    assert again.order_id == first.order_id
    assert [u.serial for u in again.units] == [u.serial for u in first.units]
    with pytest.raises(OrderRejected, match="order_id: an order with this id exists with a different"):
        await bridge.submit("SAME", "AC-W", {"panel_color": "white"}, quantity=2)
    await until_idle(bridge)
    assert sum(line["pack"].executed.values()) == 2


async def test_priority_goes_first(line, start_bridge):
    chassis = line["chassis"]
    await chassis.set_fault("stall", 1)
    bridge = await start_bridge()
    await bridge.submit("FIRST", "AC-W", {})
    await chassis.wait_for(lambda plc: plc.status.state == PlcState.BUSY)
    await bridge.submit("LOW", "AC-W", {})
    await bridge.submit("URGENT", "AC-W", {}, priority=10)
    await chassis.set_fault("stall", 0)
    await until_idle(bridge)
    started = {o: bridge.get(o).steps[0].seq for o in ("FIRST", "LOW", "URGENT")}
    assert started["FIRST"] < started["URGENT"] < started["LOW"]


async def test_watch_streams_state_changes(line, start_bridge):
    bridge = await start_bridge()
    seen: list[tuple[str, str | None]] = []

    async def collect() -> None:
        async for event in bridge.watch():
            seen.append((str(event.state), event.station))
            if event.state == OrderState.COMPLETED:
                return

    watcher = asyncio.create_task(collect())
    await asyncio.sleep(0)
    await bridge.submit("WATCHED", "AC-W", {})
    async with asyncio.timeout(10):
        await watcher
    assert seen[0] == ("received", None)
    assert seen[1] == ("queued", None)
    assert [s for _, s in seen[2:-1]][:5] == ["chassis", "coil", "compressor", "charge", "panel"]
    assert seen[-1] == ("completed", None)


async def test_telemetry_is_polled_in_three_requests_per_station(line, start_bridge):
    bridge = await start_bridge(telemetry_interval_s=0.02, heartbeat=False)  # counts requests
    link = bridge.links["chassis"]
    async with asyncio.timeout(5):
        while link.telemetry_read_at is None:  # noqa: ASYNC110 - waits for the first poll, bounded
            await asyncio.sleep(0.005)
    # at most the status block, one telemetry block and one setpoint block
    assert link.requests_per_poll == 3
    assert link.counters.telemetry_requests_per_poll in (2, 3)  # the engine's start may have read the status
    # while the station is idle the status block is read about once a second, not at every poll
    polls, requests = link.counters.polls_done, link.counters.requests
    async with asyncio.timeout(5):
        while link.counters.polls_done < polls + 10:  # noqa: ASYNC110 - waits for ten polls, bounded
            await asyncio.sleep(0.005)
    polled = link.counters.polls_done - polls  # counted as each poll starts: ±1 poll's 2 requests
    assert 2 * polled - 2 <= link.counters.requests - requests <= 2 * polled + 2 + 1  # ≤ 1 status read
    assert link.setpoints == {"force_limit_kn": 250.0}
    assert link.telemetry["state"] == "idle"
    assert 174 <= link.telemetry["press_force_kn"] <= 186
    assert link.counters.connected
    own = ModbusStationLink(bridge.mapping, "test_a")  # a link of our own: no poll task beside it
    try:
        values = await own.read_telemetry()
        assert own.counters.requests == 3
        assert set(values) == {"state", "cycle_count", "last_cycle_time_ms", "bench_air_temp_c"}
    finally:
        await own.close()


async def test_a_step_costs_four_requests_on_a_capable_plc(ac_mapping, line, start_bridge):
    """ac_line's PLCs answer function 23 and its status reads bring the input results: a step is
    parameters written and read back, start, status with results, acknowledge (docs/handshake.md)."""
    assert ac_mapping.station_type("chassis").handshake.results_with_status
    assert ac_mapping.stations["chassis"].link.read_write_registers
    chassis = line["chassis"]
    # a slow journal commit on a busy machine is no reason; the heartbeat's requests are not counted
    bridge = await start_bridge(status_reuse_s=5.0, heartbeat=False)
    async with asyncio.timeout(5):
        while not chassis.requests:  # noqa: ASYNC110 - waits for the engine's first status read, bounded
            await asyncio.sleep(0.005)
    chassis.requests.clear()
    await bridge.submit("TEN", "AC-W", {"capacity_btu": 18000}, quantity=10)  # ten units wait at chassis
    await until_idle(bridge)
    assert bridge.get("TEN").state == OrderState.COMPLETED
    requests = list(chassis.requests)
    status, parameters, start, ack = (4, 0), (23, 100), (6, 0), (6, 1)
    counts = Counter(requests)
    assert counts[parameters] == counts[start] == counts[ack] == 10, requests
    assert set(counts) == {status, parameters, start, ack}, counts  # no read-back or result read apart
    # the next unit's parameters follow the last one's acknowledge: no status read to prove the PLC is there
    after_ack = [requests[i + 1] for i, r in enumerate(requests[:-1]) if r == ack]
    assert after_ack == [parameters] * 9
    assert counts[status] <= 2 * 10 - 1  # at least one status per step, read after its start


async def test_a_running_step_is_polled_at_a_backed_off_pace(ac_mapping, tmp_path):
    """A 1 s cycle (chassis' 20 s at speed 20) is seen done with ~15 status reads, not ~200 at 5 ms."""
    ports = dict.fromkeys(ac_mapping.stations, 0)
    async with SimulatedLine(ac_mapping, ports=ports, speed=20, seed=3) as slow:
        settings = BridgeSettings(data_dir=tmp_path / "data", telemetry_interval_s=0, status_poll_max_s=0.1)
        bridge = Bridge(apply_deployment(ac_mapping, slow.endpoints()), settings)
        await bridge.start()
        try:
            chassis = slow["chassis"]
            await bridge.submit("SLOW", "AC-W", {})
            order = await until_state(bridge, "SLOW", lambda o: o.units[0].next_step >= 1, timeout_s=10)
            (step,) = [st for st in order.steps if st.station == "chassis"]
            assert step.result_code == 0
            reads = Counter(chassis.requests)[(4, 0)]
            assert 1 <= reads <= 1 / 0.1 + 10, reads  # ~6 doublings from 5 ms, then one per 100 ms
        finally:
            await bridge.stop()


async def test_an_order_waiting_on_an_absent_station_says_why_and_waits(line, start_bridge):
    chassis = line["chassis"]
    await chassis.set_fault("exception_code", 4)  # every request answered with 'device failure'
    bridge = await start_bridge()
    await bridge.submit("WAITS", "AC-W", {})
    order = await until_state(bridge, "WAITS", lambda o: o.waiting_for is not None)
    assert "station chassis" in order.waiting_for
    assert "not answering since" in order.waiting_for
    assert order.state == OrderState.QUEUED
    await chassis.set_fault("exception_code", 0)
    await until_state(bridge, "WAITS", lambda o: o.waiting_for is None)
    await until_idle(bridge)
    assert bridge.get("WAITS").state == OrderState.COMPLETED
    assert sum(chassis.executed.values()) == 1


async def test_an_order_waiting_past_the_stations_limit_faults_and_nothing_runs(ac_data, line, tmp_path):
    data = copy.deepcopy(ac_data)
    data["stations"]["chassis"]["link"] = {"absent_fault_after_s": 0.5}
    limited = parse_mapping(data)
    chassis = line["chassis"]
    await chassis.set_fault("exception_code", 4)
    bridge = Bridge(
        apply_deployment(limited, line.endpoints()),
        BridgeSettings(data_dir=tmp_path / "data", telemetry_interval_s=0, backoff_max_s=0.2),
    )
    await bridge.start()
    try:
        events = bridge.watch()
        await bridge.submit("GIVES-UP", "AC-W", {}, quantity=2)
        async with asyncio.timeout(15):
            async for event in events:
                if event.order_id == "GIVES-UP" and event.state == OrderState.FAULTED:
                    break
        await until_idle(bridge)
        order = bridge.get("GIVES-UP")  # from the journal now
        assert order.state == OrderState.FAULTED
        assert (order.fault_station, order.result_code) == ("chassis", ResultCode.STATION_ABSENT)
        assert event.message.startswith("station chassis did not answer for")
        assert not order.steps
        assert sum(chassis.executed.values()) == 0
    finally:
        await bridge.stop()


async def test_a_station_shows_idle_at_the_next_poll_after_its_acknowledge(line, start_bridge):
    """One state per station: the status the engine last read (done) is not shown after the bridge
    acknowledged it, for up to handshake.idle_status_interval_s (1 s, 20 polls here): the next
    telemetry poll reads the status again."""
    bridge = await start_bridge(telemetry_interval_s=0.05)
    link = bridge.links["coil"]
    assert link.idle_status_interval_s >= 1.0
    await bridge.submit("ONE-STATE", "AC-W", {})
    await until_idle(bridge)
    polls = link.counters.polls_done
    async with asyncio.timeout(5):
        while link.last_status is None or link.last_status.state != PlcState.IDLE:  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.01)
    assert link.counters.polls_done - polls <= 2
