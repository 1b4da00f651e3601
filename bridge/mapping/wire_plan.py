"""Which Modbus requests the bridge makes of one station, worked out once from the mapping (pure).

The station link sends exactly these; the PLC register sheet (`linebridge plc sheet`) prints them,
so what a PLC programmer is told and what goes on the wire cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.handshake import STATUS_REGISTERS, Command
from bridge.mapping.blocks import READ_WRITE_MAX, Block, plan_blocks
from bridge.mapping.fields import RegisterField
from bridge.mapping.model import Heartbeat, LineMapping

READ_FUNCTION = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}


@dataclass(frozen=True)
class Request:
    """One request as it appears on the wire: function code, first address, how many values."""

    function: int
    table: str
    start: int
    count: int
    purpose: str


@dataclass(frozen=True)
class StationPlan:
    command_address: int
    status_address: int
    status_count: int  # the status block, and with handshake.results_with_status the input results
    parameters: list[Block]
    results_in_status: list[Block]
    results_apart: list[Block]
    telemetry: dict[float | None, list[Block]]  # per poll period; None: the station's own
    setpoints: list[Block]
    setpoint_fields: dict[str, RegisterField]
    read_write_registers: bool  # function 23 writes and reads back a holding block in one request
    heartbeat: Heartbeat | None

    @property
    def results(self) -> list[Block]:
        return [*self.results_in_status, *self.results_apart]

    def read_write(self, block: Block) -> bool:
        """Whether `block` is written and read back in one request (function 23)."""
        return self.read_write_registers and not block.is_bits and block.count <= READ_WRITE_MAX

    def writes(self, blocks: list[Block], purpose: str) -> list[Request]:
        """The requests that write `blocks` and read them back, as the link sends them."""
        requests = []
        for block in blocks:
            if block.is_bits:
                requests.append(Request(15, block.table, block.start, block.count, f"write {purpose}"))
                requests.append(Request(1, block.table, block.start, block.count, f"read back {purpose}"))
            elif self.read_write(block):
                requests.append(
                    Request(23, block.table, block.start, block.count, f"write and read back {purpose}")
                )
            else:
                requests.append(Request(16, block.table, block.start, block.count, f"write {purpose}"))
                requests.append(Request(3, block.table, block.start, block.count, f"read back {purpose}"))
        return requests

    def requests(self) -> list[Request]:
        """Every request the bridge may make of the station, once each."""
        reads = [Request(4, "input", self.status_address, self.status_count, "read status")]
        reads += [read(b, "read results") for b in self.results_apart]
        writes = self.writes(self.parameters, "parameters")
        commands = [
            Request(6, "holding", self.command_address + c, 1, f"write {c.name.lower()}") for c in Command
        ]
        if self.heartbeat is not None:
            address = self.heartbeat.address
            commands.append(Request(3, "holding", address, 1, "read heartbeat (once, at the first beat)"))
            commands.append(Request(6, "holding", address, 1, "write heartbeat"))
        telemetry = [read(b, "read telemetry") for blocks in self.telemetry.values() for b in blocks]
        setpoints = [read(b, "read setpoints") for b in self.setpoints]
        for name, f in self.setpoint_fields.items():
            setpoints += self.writes(plan_blocks([(name, f)], write=True), f"setpoint {name}")
        return reads + writes + commands + telemetry + setpoints


def read(block: Block, purpose: str) -> Request:
    return Request(READ_FUNCTION[block.table], block.table, block.start, block.count, purpose)


def station_plan(mapping: LineMapping, station: str) -> StationPlan:
    kind = mapping.station_type(station)
    fields = mapping.resolved_fields(station)
    status_address = kind.handshake.status_address
    result_blocks = plan_blocks([(n, fields[n]) for n in kind.results], max_gap=8)
    with_status = kind.handshake.results_with_status
    in_status = [b for b in result_blocks if with_status and b.table == "input"]
    periods = {fields[n].scan_interval_s for n in kind.telemetry} | {None}
    setpoint_fields = {n: fields[n] for n in kind.setpoints}
    return StationPlan(
        command_address=kind.handshake.command_address,
        status_address=status_address,
        status_count=max([STATUS_REGISTERS] + [b.start + b.count - status_address for b in in_status]),
        parameters=plan_blocks([(n, fields[n]) for n in kind.parameters], write=True),
        results_in_status=in_status,
        results_apart=[b for b in result_blocks if b not in in_status],
        telemetry={
            period: plan_blocks(
                [(n, fields[n]) for n in kind.telemetry if fields[n].scan_interval_s == period], max_gap=8
            )
            for period in periods
        },
        setpoints=plan_blocks(setpoint_fields.items(), max_gap=8),
        setpoint_fields=setpoint_fields,
        read_write_registers=mapping.stations[station].link.read_write_registers,
        heartbeat=kind.handshake.heartbeat,
    )
