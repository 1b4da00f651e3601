"""The simulator's PLC side of the handshake, driven by a plain pymodbus client on loopback."""

from __future__ import annotations

import time

import pytest
from pymodbus.exceptions import ModbusException

from bridge.handshake import Command, PlcState, ResultCode
from bridge.mapping import codec
from plc_sim.faults import CONTROL_REGISTERS, DEFAULT_CONTROL_ADDRESS, Faults

CHARGE_PARAMS = [680, 10]  # charge_g, tolerance_g at holding 100-101


async def run_step(client, seq: int, params=CHARGE_PARAMS, *, ack: bool = True):
    await client.write_holding(100, params)
    await client.command(Command.START_SEQ, seq)
    done = await client.until(lambda s: s.state == PlcState.DONE and s.done_seq == seq)
    if ack:
        await client.command(Command.ACK_SEQ, seq)
        await client.until(lambda s: s.state == PlcState.IDLE and s.acked_seq == seq)
    return done


async def test_start_busy_done_acknowledge(start_plc, connect):
    plc = await start_plc("charge", speed=100)  # 25 s cycle → 0.25 s
    client = await connect(plc)
    await client.write_holding(100, CHARGE_PARAMS)
    readback = await client.modbus.read_holding_registers(100, count=2, device_id=1)
    assert readback.registers == CHARGE_PARAMS

    await client.command(Command.START_SEQ, 1)
    busy = await client.until(lambda s: s.state != PlcState.IDLE)
    assert busy.state == PlcState.BUSY
    assert busy.accepted_seq == 1
    assert busy.done_seq == 0

    done = await client.until(lambda s: s.state == PlcState.DONE)
    assert (done.done_seq, done.result_code, done.acked_seq) == (1, ResultCode.OK, 0)
    words = await client.modbus.read_input_registers(100, count=2, device_id=1)
    actual = codec.decode(plc.fields["actual_charge_g"], words.registers)
    assert abs(actual - 680) <= 10  # within the tolerance written

    await client.command(Command.ACK_SEQ, 1)
    idle = await client.until(lambda s: s.state == PlcState.IDLE)
    assert (idle.acked_seq, idle.executed_count, idle.reexecuted_count) == (1, 1, 0)
    telemetry = await plc.memory.read_field(plc.fields["cycle_count"])
    assert telemetry == 1
    assert plc.executed == {1: 1}


async def test_repeated_and_early_start_edges_never_run_a_step_twice(start_plc, connect):
    plc = await start_plc("charge", speed=100)
    client = await connect(plc)
    await client.write_holding(100, CHARGE_PARAMS)
    await client.command(Command.START_SEQ, 1)
    await client.until(lambda s: s.state == PlcState.BUSY)
    await client.command(Command.START_SEQ, 1)  # a repeated edge while running
    await client.until(lambda s: s.state == PlcState.DONE)
    await client.command(Command.START_SEQ, 1)  # and again once done
    await client.command(Command.START_SEQ, 2)  # a new step before the acknowledge: held
    held = await client.status()
    assert (held.state, held.accepted_seq) == (PlcState.DONE, 1)
    await client.command(Command.ACK_SEQ, 1)  # acknowledging releases step 2
    await client.until(lambda s: s.done_seq == 2)
    assert plc.executed == {1: 1, 2: 1}
    assert (await client.status()).reexecuted_count == 0


async def test_reusing_an_old_sequence_number_is_counted(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    for seq in (1, 2, 1):
        await run_step(client, seq)
    status = await client.status()
    assert (status.executed_count, status.reexecuted_count) == (3, 1)
    assert plc.executed == {1: 2, 2: 1}


async def test_out_of_range_parameter_is_rejected_with_code_1(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    done = await run_step(client, 1, [5000, 10], ack=False)
    assert done.result_code == ResultCode.PARAMETERS_REJECTED
    assert plc.last_reject_reason == "charge_g: 5000 is above the maximum 2000"


async def test_reject_next_through_the_control_registers(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    await client.write_holding(DEFAULT_CONTROL_ADDRESS, [107])  # reject_next = 107
    assert (await run_step(client, 1)).result_code == 107
    cleared = await client.modbus.read_holding_registers(DEFAULT_CONTROL_ADDRESS, count=1, device_id=1)
    assert cleared.registers == [0]
    assert (await run_step(client, 2)).result_code == ResultCode.OK


async def test_fault_fraction_faults_steps(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    await plc.set_fault("fault_permille", 1000)
    assert (await run_step(client, 1)).result_code == ResultCode.STATION_FAULT


async def test_stall_holds_the_step_until_cleared(start_plc, connect):
    plc = await start_plc("charge")  # zero cycle time: only the stall keeps it busy
    client = await connect(plc)
    await plc.set_fault("stall", 1)
    await client.write_holding(100, CHARGE_PARAMS)
    await client.command(Command.START_SEQ, 1)
    await client.until(lambda s: s.state == PlcState.BUSY)
    for _ in range(3):  # each write wakes a scan; none may finish the step
        await client.command(Command.ABORT_SEQ, 0)
        assert (await client.status()).state == PlcState.BUSY
    await plc.set_fault("stall", 0)
    done = await client.until(lambda s: s.state == PlcState.DONE)
    assert (done.done_seq, done.result_code) == (1, ResultCode.OK)


async def test_abort_ends_a_running_step_with_code_3(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    await plc.set_fault("stall", 1)
    await client.write_holding(100, CHARGE_PARAMS)
    await client.command(Command.START_SEQ, 1)
    await client.until(lambda s: s.state == PlcState.BUSY)
    await client.command(Command.ABORT_SEQ, 1)
    done = await client.until(lambda s: s.state == PlcState.DONE)
    assert (done.done_seq, done.result_code) == (1, ResultCode.ABORTED)


async def test_dropped_connection_then_reconnect(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    await client.write_holding(DEFAULT_CONTROL_ADDRESS + 3, [1])  # drop_next = 1
    with pytest.raises(ModbusException):
        await client.status()
    again = await connect(plc)
    assert (await again.status()).state == PlcState.IDLE
    await run_step(again, 1)
    assert plc.executed == {1: 1}


async def test_modbus_exception_answer(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    await plc.set_fault("exception_code", 4)
    reply = await client.modbus.read_input_registers(0, count=8, device_id=1)
    assert reply.isError()
    assert reply.exception_code == 4
    control = await client.modbus.read_holding_registers(
        DEFAULT_CONTROL_ADDRESS, count=CONTROL_REGISTERS, device_id=1
    )
    assert control.registers == Faults(exception_code=4).to_registers()  # control stays reachable
    await client.write_holding(DEFAULT_CONTROL_ADDRESS + 4, [0])
    assert (await client.status()).state == PlcState.IDLE


async def test_slow_answers(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    await plc.set_fault("delay_ms", 300)
    began = time.monotonic()
    await client.status()
    assert time.monotonic() - began >= 0.3


async def test_corrupted_parameter_read_back(start_plc, connect):
    plc = await start_plc("charge")
    client = await connect(plc)
    await client.write_holding(100, CHARGE_PARAMS)
    await plc.set_fault("corrupt_next", 1)
    readback = await client.modbus.read_holding_registers(100, count=2, device_id=1)
    assert readback.registers == [681, 10]
    assert plc.faults.corrupt_next == 0


async def test_bits_and_strings_of_the_panel_station(start_plc, connect):
    plc = await start_plc("panel")
    client = await connect(plc)
    engraving = codec.encode(plc.fields["engraving"], "ANNA & JO")
    await client.write_holding(100, [3, 2, *engraving])
    assert not (await client.modbus.write_coil(0, True, device_id=1)).isError()
    await client.command(Command.START_SEQ, 1)
    done = await client.until(lambda s: s.state == PlcState.DONE)
    assert done.result_code == ResultCode.OK
    vision = await client.modbus.read_discrete_inputs(0, count=1, device_id=1)
    assert vision.bits[0] is True
    assert await plc.memory.read_field(plc.fields["engraving"]) == "ANNA & JO"
    assert await plc.memory.read_field(plc.fields["wifi_module"]) is True


async def test_fields_written_together_land_each_at_its_own_address(start_plc, connect):
    """write_fields merges adjacent registers into one write: every field must still land as
    written, whatever order it is given in, across a gap left alone, and in another table
    (parameters: nothing in the simulator rewrites them on its own)."""
    plc = await start_plc("panel")
    fields = plc.fields
    engraving = codec.encode(fields["engraving"], "ANNA & JO")
    await plc.memory.write_fields(
        [(fields["engraving"], "ANNA & JO"), (fields["wifi_module"], True), (fields["color_code"], 3)]
    )
    client = await connect(plc)
    holding = await client.modbus.read_holding_registers(100, count=10, device_id=1)
    assert holding.registers == [3, 0, *engraving]
    assert (await client.modbus.read_coils(0, count=1, device_id=1)).bits[0] is True
    await plc.memory.write_fields([(fields["finish"], 2), (fields["color_code"], 4)])
    holding = await client.modbus.read_holding_registers(100, count=3, device_id=1)
    assert holding.registers == [4, 2, engraving[0]]


async def test_whole_line_on_free_ports(ac_mapping):
    from plc_sim.line import SimulatedLine

    async with SimulatedLine(ac_mapping, ports=dict.fromkeys(ac_mapping.stations, 0), speed=0) as line:
        endpoints = line.endpoints()
        assert list(endpoints) == list(ac_mapping.stations)
        assert len({ep.port for ep in endpoints.values()}) == 8
        assert all(ep.port > 0 for ep in endpoints.values())


async def test_clients_outside_the_allowed_networks_are_disconnected(start_plc, connect):
    refused = await start_plc("charge", allow=["10.0.0.0/8"])
    client = await connect(refused)  # TCP connects, then the PLC hangs up on 127.0.0.1
    with pytest.raises(ModbusException):
        await client.status()
    allowed = await start_plc("coil", allow=["127.0.0.1/32", "10.0.0.0/8"])
    assert (await (await connect(allowed)).status()).state == PlcState.IDLE
