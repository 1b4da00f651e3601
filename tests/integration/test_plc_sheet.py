"""`linebridge plc sheet` says what the bridge reads and writes: held against the requests a station
link really makes of plc-sim, for every station of ac_line."""

from __future__ import annotations

import asyncio
import csv
import io

from typer.testing import CliRunner

from bridge.cli import app
from bridge.commissioning.sheet import sheet_csv, sheet_rows
from bridge.domain.model import Order, Unit
from bridge.domain.orders import OrderRequest, validate_order
from bridge.domain.station_driver import order_values
from bridge.handshake import PlcState
from bridge.mapping import LineMapping, apply_deployment
from bridge.mapping.derive import derive_parameters
from bridge.mapping.wire_plan import station_plan
from bridge.modbus.link import ModbusStationLink
from plc_sim.line import SimulatedLine

OPTIONS = {"capacity_btu": 18000, "panel_color": "graphite", "wifi_module": True, "engraving": "ADA LOVELACE"}


async def exercise(link: ModbusStationLink, line: SimulatedLine, mapping: LineMapping, station: str) -> None:
    """Everything the bridge ever asks of a station: a step from start to acknowledge, a poll of
    telemetry and setpoints, each setpoint written, and an abort."""
    valid = validate_order(mapping, OrderRequest("SHEET-1", "AC-W", OPTIONS))
    order = Order("SHEET-1", "AC-W", valid.options, 1)
    kind = mapping.stations[station].type
    parameters = derive_parameters(mapping.products["AC-W"], kind, order_values(order, Unit("SHEET-1", 0, 1)))
    plc = line[station]
    await link.status()
    await link.write_parameters(parameters)
    await link.start(1)
    await plc.wait_for(lambda p: p.status.state == PlcState.DONE and p.status.done_seq == 1, timeout_s=5)
    await link.status()
    await link.read_results()
    await link.acknowledge(1)
    await link.read_telemetry()
    for name, value in link.setpoints.items():
        await link.write_setpoint(name, value)
    await link.abort(1)  # not running: the PLC ignores it, but the request is one the bridge makes
    if link.heartbeat is not None:
        await link.beat()


async def test_the_sheet_lists_exactly_the_requests_a_link_makes(ac_mapping: LineMapping) -> None:
    ports = dict.fromkeys(ac_mapping.stations, 0)
    async with SimulatedLine(ac_mapping, ports=ports, speed=0, seed=1) as line:
        mapping = apply_deployment(ac_mapping, line.endpoints())
        for station in mapping.stations:
            line[station].request_spans.clear()
            link = ModbusStationLink(mapping, station, timeout_s=2)
            try:
                async with asyncio.timeout(20):
                    await exercise(link, line, mapping, station)
            finally:
                await link.close()
            seen = set(line[station].request_spans)
            planned = {(q.function, q.start, q.count) for q in station_plan(mapping, station).requests()}
            assert seen == planned, f"{station}: on the wire {sorted(seen)}, on the sheet {sorted(planned)}"
            assert_rows_covered(mapping, station)


def assert_rows_covered(mapping: LineMapping, station: str) -> None:
    """Every register on the sheet is inside a request to its table, and every register a write
    request touches is on the sheet (a write never lands on an address the sheet does not name)."""
    requests = station_plan(mapping, station).requests()
    rows = sheet_rows(mapping, station)
    named = {(r.table, r.address + i) for r in rows for i in range(r.registers)}
    for r in rows:
        for i in range(r.registers):
            address = r.address + i
            assert any(q.table == r.table and q.start <= address < q.start + q.count for q in requests), (
                f"{station}: {r.group} {r.name} ({r.table} {address}) is in no request"
            )
    for q in requests:
        if q.function in (6, 15, 16, 23):
            for address in range(q.start, q.start + q.count):
                assert (q.table, address) in named, f"{station}: {q.purpose} writes {q.table} {address}"


def test_the_csv_imports_as_a_table_with_modicon_numbers_and_layouts(ac_mapping: LineMapping) -> None:
    rows = list(csv.DictReader(io.StringIO(sheet_csv(ac_mapping, "panel"))))
    by_name = {(r["group"], r["name"]): r for r in rows}
    assert by_name[("command", "start_seq")]["number"] == "40001"
    assert by_name[("status", "state")]["number"] == "30001"
    assert by_name[("parameter", "wifi_module")]["number"] == "00001"
    assert by_name[("result", "vision_ok")]["number"] == "10001"
    engraving = by_name[("parameter", "engraving")]
    assert engraving["registers"] == "8"
    assert "16 ASCII characters, the first in the high byte" in engraving["layout"]
    assert engraving["written_by"] == "bridge"
    assert engraving["retain"].startswith("no")
    coil_pitch = {r["name"]: r for r in csv.DictReader(io.StringIO(sheet_csv(ac_mapping, "coil")))}
    assert coil_pitch["fin_pitch_mm"]["layout"] == "IEEE 754, 2 registers, low word first"
    assert coil_pitch["furnace_setpoint_c"]["retain"].startswith("yes")
    assert coil_pitch["furnace_temp_c"]["scale"] == "0.1"
    assert coil_pitch["furnace_temp_c"]["unit"] == "°C"


def test_the_command_names_an_unknown_station_and_writes_markdown(tmp_path) -> None:
    runner = CliRunner()
    refused = runner.invoke(app, ["plc", "sheet", "oven"])
    assert refused.exit_code == 2
    assert "no station 'oven'" in refused.output
    assert "chassis" in refused.output
    out = tmp_path / "charge.md"
    made = runner.invoke(app, ["plc", "sheet", "charge", "--output", str(out)])
    assert made.exit_code == 0, made.output
    text = out.read_text()
    assert "| 4 (read input registers) | input | 0 | 102 | read status |" in text  # results with the status
    assert "## Timing the bridge expects" in text
