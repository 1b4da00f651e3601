"""The register sheet a PLC programmer builds a station's Modbus side from (`linebridge plc sheet`).

Made from the mapping and from the request plan the station link itself sends (wire_plan), never
written by hand: `tests/integration/test_plc_sheet.py` holds it against the requests a link makes
of plc-sim.
"""

from __future__ import annotations

import csv
import io
from dataclasses import astuple, dataclass, fields

from bridge.domain.engine import EngineSettings
from bridge.handshake import Command, Status
from bridge.mapping.fields import RegisterField
from bridge.mapping.model import LineMapping
from bridge.mapping.vocabulary import BIT_TABLES
from bridge.mapping.wire_plan import StationPlan, station_plan

# Modicon references, 1-based: the numbers many PLC tools and HMI packages show.
_PREFIX = {"coil": "0", "discrete_input": "1", "input": "3", "holding": "4"}
_POLL = EngineSettings()  # the engine's default status poll while a step runs
_FUNCTION_NAMES = {
    1: "read coils",
    2: "read discrete inputs",
    3: "read holding registers",
    4: "read input registers",
    6: "write single register",
    15: "write multiple coils",
    16: "write multiple registers",
    23: "read/write multiple registers",
}
# group → who writes it, and whether the PLC must keep it through a power cycle (docs/plc-guide.md)
_ROLE = {
    "command": ("bridge", "no"),
    "status": ("PLC", "yes"),
    "heartbeat": ("bridge", "no"),
    "parameter": ("bridge", "no: written before every start, latched by the PLC at the start"),
    "result": ("PLC", "yes: until the next start"),
    "telemetry": ("PLC", "no"),
    "setpoint": ("bridge on request; PLC keeps it", "yes: the bridge writes only when it changes"),
}
_STATUS_NOTES = {
    Status.STATE: "0 idle (takes a start), 1 busy, 2 done (result waiting for ack_seq)",
    Status.ACCEPTED_SEQ: "the last step started (the start_seq it took)",
    Status.DONE_SEQ: "the last step finished",
    Status.RESULT_CODE: "result of done_seq: 0 ok, 1 parameters rejected, 2 check failed, 3 aborted,"
    " 4 station fault, 100 and up the station's own",
    Status.ACKED_SEQ: "the last step whose ack_seq the PLC took",
    Status.EXECUTED_COUNT_HI: "steps started since power-up (uint32 with the next register, high word first)",
    Status.EXECUTED_COUNT_LO: "steps started since power-up, low word",
    Status.REEXECUTED_COUNT: "starts of a sequence number that had run before: must stay 0",
}
_COMMAND_NOTES = {
    Command.START_SEQ: "write N: start step N with the parameters now in place (1..65535, wraps to 1)",
    Command.ACK_SEQ: "write N: the result of step N is recorded; go idle",
    Command.ABORT_SEQ: "write N: abort step N while it runs (result code 3)",
}


@dataclass(frozen=True)
class Row:
    group: str
    name: str
    table: str
    address: int
    number: str
    type: str
    registers: int
    byte_order: str
    word_order: str
    scale: str
    offset: str
    unit: str
    range: str
    values: str
    layout: str
    written_by: str
    retain: str
    description: str


def modicon(table: str, address: int) -> str:
    """The 1-based reference: 40001 for holding 0; six digits once five no longer fit."""
    return f"{_PREFIX[table]}{address + 1:04d}" if address < 9999 else f"{_PREFIX[table]}{address + 1:05d}"


def layout(f: RegisterField) -> str:
    byte_order, word_order = f.byte_order or "big", f.word_order or "big"
    if f.table in BIT_TABLES:
        return "one bit"
    if f.type == "string":
        first = "high" if byte_order == "big" else "low"
        return (
            f"{f.register_count} registers = {2 * f.register_count} ASCII characters, the first in the"
            f" {first} byte of the first register, padded with NUL (0)"
        )
    if f.register_count > 1:
        words = "high word first" if word_order == "big" else "low word first"
        kind = "IEEE 754" if f.type.startswith("float") else "signed" if f.type[0] == "i" else "unsigned"
        swapped = ", bytes swapped" if byte_order == "little" else ""
        return f"{kind}, {f.register_count} registers, {words}{swapped}"
    if f.type == "bool":
        return "0 or 1 in a register"
    return "bytes swapped in the register" if byte_order == "little" else ""


def _field_row(group: str, name: str, f: RegisterField) -> Row:
    writer, retain = _ROLE[group]
    span = [f"{b:g}" for b in (f.min, f.max) if b is not None]
    bounds = (
        f"{f.min:g} .. {f.max:g}"
        if len(span) == 2
        else f"min {span[0]}"
        if f.min is not None
        else (f"max {span[0]}" if span else "")
    )
    values = ", ".join(f"{k}={v}" for k, v in (f.values or {}).items())
    return Row(
        group, name, f.table, f.address, modicon(f.table, f.address), f.type, f.register_count,
        f.byte_order or "big", f.word_order or "big",
        "" if f.scale == 1 else f"{f.scale:g}", "" if f.offset == 0 else f"{f.offset:g}",
        f.unit or "", bounds, values, layout(f), writer, retain, f.description,
    )  # fmt: skip


def _handshake_rows(plan: StationPlan) -> list[Row]:
    rows = []
    writer, retain = _ROLE["command"]
    for c in Command:
        address = plan.command_address + c
        keep = retain if c != Command.START_SEQ else "no: may clear at power-up; left there it starts nothing"
        rows.append(Row(
            "command", c.name.lower(), "holding", address, modicon("holding", address), "uint16", 1, "big",
            "big", "", "", "", "0 .. 65535", "", "", writer, keep, _COMMAND_NOTES[c],
        ))  # fmt: skip
    if plan.heartbeat is not None:
        beat = plan.heartbeat
        writer, retain = _ROLE["heartbeat"]
        counts = "1, 2, ... 65535, 1, ..." if beat.mode == "counter" else "1, 0, 1, ..."
        rows.append(Row(
            "heartbeat", "heartbeat", "holding", beat.address, modicon("holding", beat.address), "uint16", 1,
            "big", "big", "", "", "", "", counts, "", writer, retain,
            f"written every {beat.period_s:g} s ({beat.mode}); unchanged for {beat.lost_after_s:g} s, the"
            " bridge is gone: finish the running step, refuse new starts (result_code 5)",
        ))  # fmt: skip
    writer, retain = _ROLE["status"]
    for s in Status:
        address = plan.status_address + s
        values = "idle=0, busy=1, done=2" if s == Status.STATE else ""
        rows.append(Row(
            "status", s.name.lower(), "input", address, modicon("input", address), "uint16",
            1, "big", "big", "", "", "", "", values, "", writer, retain, _STATUS_NOTES[s],
        ))  # fmt: skip
    return rows


def sheet_rows(mapping: LineMapping, station: str) -> list[Row]:
    """Every register the bridge reads or writes at `station`, in address order per group."""
    kind = mapping.station_type(station)
    fields_ = mapping.resolved_fields(station)
    rows = _handshake_rows(station_plan(mapping, station))
    for group, names in (
        ("parameter", kind.parameters),
        ("result", kind.results),
        ("telemetry", kind.telemetry),
        ("setpoint", kind.setpoints),
    ):
        ordered = sorted(names, key=lambda n: (fields_[n].table, fields_[n].address))
        rows += [_field_row(group, n, fields_[n]) for n in ordered]
    return rows


def sheet_csv(mapping: LineMapping, station: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([f.name for f in fields(Row)])
    writer.writerows(astuple(row) for row in sheet_rows(mapping, station))
    return out.getvalue()


def sheet_markdown(mapping: LineMapping, station: str, *, request_timeout_s: float = 1.0,
                   telemetry_interval_s: float = 1.0) -> str:  # fmt: skip
    st = mapping.stations[station]
    kind = mapping.station_type(station)
    plan = station_plan(mapping, station)
    ep = st.endpoint
    where = f"serial {ep.serial.device}" if ep.serial is not None else f"{ep.host}:{ep.port}"
    lines = [
        f"# Register sheet: station `{station}` (type `{st.type}`) of line `{mapping.line.name}`",
        "",
        f"{kind.description or ''}".strip(),
        "",
        f"Modbus server at {where}, unit (device) id {ep.device_id}. Addresses are 0-based protocol",
        "addresses, as on the wire; `number` is the 1-based Modicon reference (0xxxx coils, 1xxxx",
        "discrete inputs, 3xxxx input registers, 4xxxx holding registers). docs/plc-guide.md explains",
        "the handshake the PLC runs on these registers.",
        "",
        "## Registers",
        "",
        "| group | name | table | address | number | type | regs | byte/word order | scale | unit | range"
        " | values | layout | written by | retain | description |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sheet_rows(mapping, station):
        scale = r.scale + (f" + {r.offset}" if r.offset else "")
        cells = [
            r.group, f"`{r.name}`", r.table, str(r.address), r.number, r.type, str(r.registers),
            f"{r.byte_order}/{r.word_order}", scale, r.unit, r.range, r.values, r.layout, r.written_by,
            r.retain, r.description,
        ]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [
        "",
        "Engineering value = raw × scale + offset. The PLC must answer every request below over the",
        "whole span, gaps included (a read of a gap returns whatever is there; the bridge ignores it).",
        "",
        "## Requests the bridge makes",
        "",
        "| function | table | start | count | what |",
        "|---|---|---|---|---|",
    ]
    for q in plan.requests():
        function = f"{q.function} ({_FUNCTION_NAMES[q.function]})"
        lines.append(f"| {function} | {q.table} | {q.start} | {q.count} | {q.purpose} |")
    own = kind.scan_interval_s or telemetry_interval_s
    lines += [
        "",
        "## Timing the bridge expects",
        "",
        f"- Every request is answered within {request_timeout_s:g} s (`--request-timeout`); a request",
        f"  is tried {st.link.attempts} times, and after {st.link.offline_after} failed requests in a",
        "  row the station shows offline.",
        "- A start (`start_seq = N` while idle) is taken within one PLC scan: `state` busy and",
        "  `accepted_seq` N together. Results are in place before `state` shows done, and stay until",
        "  the next start. An `ack_seq = N` is taken within one scan: `state` idle, `acked_seq` N.",
        f"- While a step runs the bridge reads the status every {_POLL.status_poll_s * 1000:g} ms at first,"
        f" doubling to {_POLL.status_poll_max_s:g} s; a",
        f"  cycle of {kind.cycle_time_s:g} s (the mapping's `cycle_time_s`) costs about"
        f" {_status_reads(kind.cycle_time_s)} status reads.",
        f"- Telemetry is read every {own:g} s; while no step runs the status block with it at most every"
        f" {kind.handshake.idle_status_interval_s:g} s.",
    ]
    if plan.heartbeat is not None:
        beat = plan.heartbeat
        lines += [
            f"- The heartbeat (holding {beat.address}) changes every {beat.period_s:g} s while the bridge"
            f" runs; unchanged for {beat.lost_after_s:g} s (`timeout_s`), the bridge is gone.",
        ]
    return "\n".join(lines) + "\n"


def _status_reads(cycle_s: float) -> int:
    """How many status reads the engine's backed-off poll (station_driver) makes over a cycle."""
    elapsed, poll, reads = 0.0, _POLL.status_poll_s, 1
    while elapsed < cycle_s:
        elapsed += poll
        poll = min(2 * poll, _POLL.status_poll_max_s)
        reads += 1
    return reads
