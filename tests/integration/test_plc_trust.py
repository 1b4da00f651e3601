"""What a PLC reports is checked, not trusted: steps the bridge did not start, values that are no
values, garbage in the status block, and setpoint writes racing each other."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from asyncua import ua
from structlog.testing import capture_logs

from bridge.domain.model import OrderState
from bridge.handshake import Command, PlcState, ResultCode
from tests.integration.opcua_rig import opcua_rig, s
from tests.integration.test_opcua import Events, until_good

pytestmark = pytest.mark.slow

STATION_EVENT = "T.StationStatusEventType"
ERROR_STATE = 4  # StationStateEnum: offline, idle, busy, done, error


@pytest.fixture
async def rig(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        yield rig


async def until_final(rig, order_id: str, timeout_s: float = 15):
    async with asyncio.timeout(timeout_s):
        while not (order := rig.bridge.get(order_id)).state.is_final:  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.01)
    return order


async def station_events(rig) -> Events:
    handler = Events()
    subscription = await rig.client.create_subscription(10, handler)
    await subscription.subscribe_events(
        rig.line_node, rig.client.get_node(ua.NodeId(STATION_EVENT, rig.types_ns))
    )
    return handler


@pytest.mark.parametrize(
    ("intrusion", "reason"),
    [("next", "step(s) started that the bridge did not start"), ("old", "re-execution count rose")],
)
async def test_a_start_the_bridge_did_not_issue_holds_the_station(rig, connect, intrusion, reason):
    events = await station_events(rig)
    await rig.bridge.submit("FIRST", "AC-W", {"capacity_btu": 9000}, quantity=2)
    assert (await until_final(rig, "FIRST")).state == OrderState.COMPLETED
    charge = rig.line["charge"]
    other_master = await connect(charge)
    before = await other_master.status()
    seq = before.accepted_seq + 1 if intrusion == "next" else before.accepted_seq - 1
    if intrusion == "old":  # a sequence number the PLC ran before: it runs it again
        assert charge.executed[seq] == 1
    await other_master.command(Command.START_SEQ, seq)
    await other_master.until(lambda st: st.done_seq == seq and st.state == PlcState.DONE)

    with capture_logs() as logs:
        await rig.bridge.submit("SECOND", "AC-W", {"capacity_btu": 24000})
        second = await until_final(rig, "SECOND")
    assert second.state == OrderState.FAULTED
    assert (second.fault_station, second.result_code) == ("charge", ResultCode.HANDSHAKE_VIOLATION)
    (step,) = [st for st in second.steps if st.station == "charge"]
    assert step.results == {}  # the other master's results were not taken for this unit's
    assert any(e["event"] == "station_handshake_violation" and reason in e["reason"] for e in logs)
    event = await events.until(lambda e: e.Station == "charge" and e.Severity == 900)
    assert reason in event.Message.Text
    assert await rig.node("Plant.Lines.ac_line.Stations.charge.State").read_value() == ERROR_STATE

    # Held: a third order waits before charge, it is not faulted and nothing is started there.
    await rig.bridge.submit("THIRD", "AC-W", {})
    executed = charge.status.executed_count
    async with asyncio.timeout(10):
        while (third := rig.bridge.get("THIRD")).units[0].next_step < 3:  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.01)
    assert third.state == OrderState.RUNNING
    assert charge.status.executed_count == executed

    result = await rig.call("ClearStationError", s("charge"))  # the local demo session is an engineer
    assert result.StatusCode.is_good()
    assert reason in result.OutputArguments[0].Value
    assert (await until_final(rig, "THIRD")).state == OrderState.COMPLETED
    await events.until(lambda e: e.Station == "charge" and "error cleared" in e.Message.Text)
    assert any(
        r[1] == "station_clear" and r[4].startswith("ok charge") for r in rig.bridge.journal.load_audit()
    )
    unknown = await rig.call("ClearStationError", s("oven"))
    assert unknown.StatusCode.value == ua.StatusCodes.BadNotFound


def float32_words(value: float) -> list[int]:
    return list(struct.unpack(">2H", struct.pack(">f", value)))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
async def test_results_that_are_no_numbers_fault_the_step_and_publish_valid_json(rig, value):
    charge = rig.line["charge"]
    await charge.set_fault("stall", 1)
    await rig.bridge.submit("NAN-1", "AC-W", {})
    await charge.wait_for(lambda plc: plc.status.state == PlcState.BUSY, timeout_s=10)
    await charge.memory.write("input", charge.fields["actual_charge_g"].address, float32_words(value))
    with capture_logs() as logs:
        await charge.set_fault("stall", 0)
        order = await until_final(rig, "NAN-1")
    assert (order.state, order.fault_station, order.result_code) == (
        OrderState.FAULTED,
        "charge",
        ResultCode.RESULTS_INVALID,
    )
    (logged,) = [e for e in logs if e["event"] == "step_results_invalid"]
    assert "actual_charge_g" in logged["reason"]
    assert "not a finite number" in logged["reason"]
    node = rig.node("Plant.Lines.ac_line.Orders.NAN-1.Steps.0-3-charge.Results")
    async with asyncio.timeout(5):
        while (text := await node.read_value()) is None:  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.01)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(text, parse_constant=refuse) == {}


async def test_values_outside_the_mapping_are_uncertain_or_bad_one_by_one(rig):
    coil, test_a = rig.line["coil"], rig.line["test_a"]
    furnace = rig.node("Plant.Lines.ac_line.Stations.coil.Setpoints.furnace_setpoint_c")
    profile = rig.node("Plant.Lines.ac_line.Stations.test_a.Setpoints.test_profile")
    bench_temp = rig.node("Plant.Lines.ac_line.Stations.test_a.Telemetry.bench_air_temp_c")
    await until_good(furnace)
    await until_good(profile)
    await coil.memory.write("holding", coil.fields["furnace_setpoint_c"].address, [30000])  # 3000 °C, max 650
    await test_a.memory.write("holding", test_a.fields["test_profile"].address, [77])  # no such enum code

    async def status_of(node, code: int):
        async with asyncio.timeout(5):
            while (dv := await node.read_data_value(raise_on_bad_status=False)).StatusCode.value != code:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return dv

    uncertain = await status_of(furnace, ua.StatusCodes.UncertainEngineeringUnitsExceeded)
    assert uncertain.Value.Value == pytest.approx(3000)
    await status_of(profile, ua.StatusCodes.BadDataEncodingInvalid)
    # One bad value is that value's problem: the station stays online, its other values good.
    assert await rig.node("Plant.Lines.ac_line.Stations.test_a.Connected").read_value() is True
    assert (await bench_temp.read_data_value()).StatusCode.is_good()
    await rig.bridge.submit("STILL-RUNS", "AC-W", {})
    assert (await until_final(rig, "STILL-RUNS")).state == OrderState.COMPLETED


async def test_a_status_block_of_garbage_is_an_error_state_logged_once(rig):
    events = await station_events(rig)
    test_b = rig.line["test_b"]
    address = test_b.kind.handshake.status_address
    good = await test_b.memory.read("input", address, 1)
    with capture_logs() as logs:
        await test_b.memory.write("input", address, [7])
        event = await events.until(lambda e: e.Station == "test_b" and e.Severity == 900)
        assert "status block holds garbage" in event.Message.Text
        state = rig.node("Plant.Lines.ac_line.Stations.test_b.State")
        async with asyncio.timeout(5):
            while await state.read_value() != ERROR_STATE:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.02)
        polls = rig.bridge.links["test_b"].counters.requests
        async with asyncio.timeout(5):
            while rig.bridge.links["test_b"].counters.requests < polls + 20:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.02)
        assert await rig.node("Plant.Lines.ac_line.Stations.test_b.Connected").read_value() is True
        await test_b.memory.write("input", address, good)
        await events.until(lambda e: e.Station == "test_b" and "error cleared" in e.Message.Text)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["station_status_invalid"]


async def test_concurrent_setpoint_writes_all_answer_truthfully(rig):
    furnace = rig.node("Plant.Lines.ac_line.Stations.coil.Setpoints.furnace_setpoint_c")
    await until_good(furnace)
    values = [560.0 + 2 * i for i in range(40)]
    with capture_logs() as logs:
        codes = await asyncio.gather(
            *(furnace.write_value(ua.Variant(v, ua.VariantType.Double)) for v in values)
        )
    assert codes == [None] * 40  # write_value raises on a Bad status: every write answered Good
    assert not [e for e in logs if e["log_level"] == "error"]
    coil = rig.line["coil"]
    final = await coil.memory.read_field(coil.fields["furnace_setpoint_c"])
    assert final in values
    assert await furnace.read_value() == pytest.approx(final)


async def test_single_lost_frames_never_take_a_station_offline(rig):
    events = await station_events(rig)
    temperature = rig.node("Plant.Lines.ac_line.Stations.test_b.Telemetry.bench_air_temp_c")
    await until_good(temperature)
    test_b, link = rig.line["test_b"], rig.bridge.links["test_b"]
    # From here on: a loaded machine can stall the rig's start-up (the face building its address
    # space on the loop) past the links' 4 s progress watchdog, which is not what this test is about.
    outages_before = link.counters.outages
    await rig.bridge.submit("THROUGH-DROPS", "AC-W", {})
    for _ in range(8):  # the PLC hangs up instead of answering one request, eight times
        await test_b.set_fault("drop_next", 1)
        await test_b.wait_for(lambda plc: plc.faults.drop_next == 0, timeout_s=10)
        answered = link.counters.requests
        async with asyncio.timeout(10):  # a single lost frame: the link is working again before the next
            while link.counters.requests < answered + 3:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.02)
    assert (await until_final(rig, "THROUGH-DROPS")).state == OrderState.COMPLETED
    assert link.counters.retries >= 8
    assert link.counters.outages == outages_before
    assert await rig.node("Plant.Lines.ac_line.Stations.test_b.Connected").read_value() is True
    assert (await temperature.read_data_value()).StatusCode.is_good()
    assert not [e for e in events.events if e.Station == "test_b" and e.Connected is False]
    retries = rig.node("Plant.Lines.ac_line.Stations.test_b.Diagnostics.Retries")
    async with asyncio.timeout(5):
        while await retries.read_value() < 8:  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("decision", ["rerun", "fail"])
async def test_a_plc_restarted_mid_step_holds_the_station_until_an_engineer_decides(rig, decision):
    """A PLC that power-cycles mid-step loses the step: starting it again would charge a unit
    twice. The station is held (State error, an event, the order says why) until an engineer says
    to run it again or to fault the unit; the decision is audited."""
    events = await station_events(rig)
    charge = rig.line["charge"]
    await charge.set_fault("stall", 1)
    with capture_logs() as logs:
        await rig.bridge.submit("CYCLED", "AC-W", {})
        async with asyncio.timeout(15):  # the bridge has seen the step run there (else it cannot know)
            while not any(e["event"] == "step_seen_on_plc" and e["at_station"] == "charge" for e in logs):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    seq = charge.status.accepted_seq
    await charge.set_fault("stall", 0)
    await charge.power_cycle()

    event = await events.until(lambda e: e.Station == "charge" and "restarted" in e.Message.Text)
    assert event.Severity == 900
    assert await rig.node("Plant.Lines.ac_line.Stations.charge.State").read_value() == ERROR_STATE
    waiting = rig.node("Plant.Lines.ac_line.Orders.CYCLED.WaitingFor")
    async with asyncio.timeout(10):
        while "restarted" not in await waiting.read_value():  # noqa: ASYNC110 - polls the server, bounded
            await asyncio.sleep(0.05)
    assert charge.executed[seq] == 1  # not started again behind the engineer's back
    assert rig.bridge.get("CYCLED").state == OrderState.RUNNING

    undecided = await rig.call("ClearStationError", s("charge"))
    assert undecided.StatusCode.value == ua.StatusCodes.BadInvalidState
    assert "rerun" in undecided.OutputArguments[0].Value
    decided = await rig.call("ClearStationError", s("charge"), s(decision))
    assert decided.StatusCode.is_good(), decided
    order = await until_final(rig, "CYCLED")
    if decision == "rerun":
        assert order.state == OrderState.COMPLETED
        assert charge.executed[seq] == 2  # run again, as decided
    else:
        assert (order.state, order.fault_station) == (OrderState.FAULTED, "charge")
        assert order.result_code == ResultCode.PLC_RESTARTED
        assert charge.executed[seq] == 1
    audit = [r for r in rig.bridge.journal.load_audit() if r[1] == "station_clear"]
    assert any(r[4].startswith(f"ok charge: {decision}: cleared: PLC restarted") for r in audit), audit
    assert any(r[4].startswith("refused charge") for r in audit), audit
