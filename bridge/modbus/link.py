"""A station PLC over Modbus: the handshake, parameters, results, setpoints and telemetry as the
mapping lays them out, on one `StationConnection` (connection.py: requests, retries, outages)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from bridge.errors import CodecError, ParameterMismatch, StationError
from bridge.handshake import STATUS_REGISTERS, Command, StatusBlock, next_beat
from bridge.mapping import codec
from bridge.mapping.blocks import Block, plan_blocks
from bridge.mapping.decoders import block_decoder
from bridge.mapping.model import LineMapping
from bridge.mapping.wire_plan import station_plan
from bridge.modbus.connection import StationConnection

log = structlog.get_logger(__name__)


_READERS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete_input": "read_discrete_inputs",
}


class ModbusStationLink:
    """Implements the domain's StationLink for one station of a mapping."""

    def __init__(
        self,
        mapping: LineMapping,
        station: str,
        *,
        timeout_s: float = 1.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 5.0,
        seed: int | None = None,
        beat_before_start: bool = True,
    ) -> None:
        self.station = station
        self.endpoint = mapping.stations[station].endpoint
        self.policy = mapping.stations[station].link
        kind = mapping.station_type(station)
        plan = self._plan = station_plan(mapping, station)  # the requests `linebridge plc sheet` prints
        self._command_address = plan.command_address
        self._status_address = plan.status_address
        self.heartbeat = plan.heartbeat
        self._beat_value: int | None = None  # the last heartbeat written (None: not read yet)
        self._beat_at = float("-inf")  # time.monotonic() it was written
        self._beat_before_start = beat_before_start  # off for `plc check`, which beats on its own
        self.idle_status_interval_s = kind.handshake.idle_status_interval_s
        self._parameter_blocks = plan.parameters
        self._result_blocks = plan.results
        # handshake.results_with_status: the input-register results come with every status read
        self._results_in_status = plan.results_in_status
        self._results_apart = plan.results_apart
        self._status_count = plan.status_count
        self._status_words: list[int] = []  # as the last status read answered, results included
        # Telemetry per poll period: None, the station's own; others set per field in the mapping.
        self._telemetry_groups = plan.telemetry
        self._telemetry_blocks = [block for blocks in self._telemetry_groups.values() for block in blocks]
        self._setpoint_fields = plan.setpoint_fields
        self._setpoint_blocks = plan.setpoints
        self._poll_plans: dict[tuple[float | None, ...], tuple[list[Block], bool, frozenset[str]]] = {}
        self._block_reads: dict[int, tuple[str, Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]]] = {}
        self._decoders = {
            id(block): block_decoder(block)
            for block in (*self._result_blocks, *self._telemetry_blocks, *self._setpoint_blocks)
        }  # built once: the mapping is not interpreted again per value
        self._log = log.bind(station=station, line=mapping.line.name)
        self._conn = StationConnection(
            station, self.endpoint, self.policy, timeout_s=timeout_s, backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s, seed=seed, log=self._log,
        )  # fmt: skip
        self.counters = self._conn.counters
        # each request's duration, all its tries, until the scanner takes them into its next event
        self.request_seconds = self._conn.request_seconds
        self._bad_status = 0  # status reads in a row that held garbage
        self._setpoint_lock = asyncio.Lock()  # a write and its read-back, one setpoint at a time
        self.telemetry: dict[str, Any] = {}
        # The dict the last poll replaced and the fields it decoded anew (their words changed): a
        # listener that saw `telemetry_before` need compare nothing else.
        self.telemetry_before: dict[str, Any] = {}
        self.telemetry_changed: Collection[str] = ()
        self._last_words: dict[int, list[int] | list[bool]] = {}  # per telemetry block, as last polled
        self.setpoints: dict[str, Any] = {}  # as last read from (or written to and read back from) the PLC
        self.doubts: dict[str, codec.Doubt] = {}  # telemetry and setpoint values of the last poll in doubt
        self.telemetry_read_at: float | None = None
        self.last_read: frozenset[str] = frozenset()  # the telemetry and setpoint fields the last poll read
        self.last_status: StatusBlock | None = None  # as last read, by the engine or a telemetry poll
        self.status_read_at: float | None = None  # time.time() of that read
        self._status_age_from = 0.0  # time.monotonic() of that read (its age, whatever the wall clock does)

    # -- the connection under it ------------------------------------------------------------

    async def close(self) -> None:
        await self._conn.close()

    @property
    def status_invalid(self) -> bool:
        """The PLC answers, but its handshake status block holds garbage."""
        return self._bad_status > 0

    def retry_delay_s(self) -> float:
        return self._conn.backoff_s(max(self._conn.failures - 1, self._bad_status - 1, 0))

    async def _write_command(self, offset: Command, value: int) -> None:
        address = self._command_address + offset
        await self._conn.request(
            f"write {offset.name.lower()}",
            lambda c: c.write_register(address, value, device_id=self.endpoint.device_id),
        )
        # The status held no longer describes the PLC (an acknowledged step is idle now): the next
        # telemetry poll reads it again instead of showing "done" until the idle status interval.
        self._status_age_from = float("-inf")

    async def _read_block(self, block: Block) -> list[int] | list[bool]:
        read = self._block_reads.get(id(block))
        if read is None:  # made once per block: a poll reads the same blocks ten times a second
            reader, start, count = _READERS[block.table], block.start, block.count
            dev = self.endpoint.device_id
            read = self._block_reads[id(block)] = (
                f"read {block.table} {start}+{count}",
                lambda c: getattr(c, reader)(start, count=count, device_id=dev),
            )
        reply = await self._conn.request(*read)
        values = reply.bits if block.is_bits else reply.registers
        if len(values) != block.count:  # bits come in whole bytes: cut to the block
            if len(values) < block.count:
                raise self._conn.failed(read[0], f"short answer of {len(values)} values")
            values = values[: block.count]
        return values

    async def _read_fields(self, blocks: list[Block]) -> tuple[dict[str, Any], dict[str, codec.Doubt]]:
        """Each field's value, and what is doubtful about some of them: one value that makes no
        sense (an unknown enum code, a NaN) is that value's problem, never the station's."""
        values: dict[str, Any] = {}
        doubts: dict[str, codec.Doubt] = {}
        for block in blocks:
            raw = await self._read_block(block)
            block_values, block_doubts = self._decoders[id(block)](raw)
            values.update(block_values)
            doubts.update(block_doubts)
        return values, doubts

    # -- the handshake -----------------------------------------------------------------------

    async def status(self) -> StatusBlock:
        """The handshake status block; a StationError while it holds garbage (logged once, and
        once when it makes sense again)."""
        dev, count = self.endpoint.device_id, self._status_count
        self._status_words = []
        reply = await self._conn.request(
            "read status",
            lambda c: c.read_input_registers(self._status_address, count=count, device_id=dev),
        )
        try:
            if len(reply.registers) != count:
                raise ValueError(f"asked for {count} registers, got {len(reply.registers)}")
            status = StatusBlock.from_registers(reply.registers[:STATUS_REGISTERS])
        except ValueError as exc:
            self._bad_status += 1
            if self._bad_status == 1:
                self._log.error("station_status_invalid", error=str(exc))
            self.counters.last_error = f"read status: {exc}"
            raise StationError(f"read status: {exc}", station=self.station) from exc
        if self._bad_status:
            self._log.info("station_status_valid", after_reads=self._bad_status)
            self._bad_status = 0
        self.last_status, self._status_age_from = status, time.monotonic()
        self.status_read_at = time.time()
        self._status_words = reply.registers
        return status

    async def write_parameters(self, parameters: dict[str, Any]) -> None:
        payload = _encode_blocks(self._parameter_blocks, parameters, "parameter")
        await self._write_verified(payload, "parameters")

    async def write_setpoint(self, name: str, value: Any) -> None:
        """Write one setpoint the mapping declares and read it back; CodecError before anything is
        written if the value does not fit, ParameterMismatch if the PLC holds something else after."""
        f = self._setpoint_fields.get(name)
        if f is None:
            raise CodecError(f"station {self.station} has no setpoint {name!r}")
        payload = _encode_blocks(plan_blocks([(name, f)], write=True), {name: value}, "setpoint")
        async with self._setpoint_lock:  # another write between ours and its read-back is no mismatch
            await self._write_verified(payload, "setpoint")
            # new dicts, never changed in place: a listener compares them with the last poll's
            self.setpoints = {**self.setpoints, name: value}
            self.doubts = {k: v for k, v in self.doubts.items() if k != name}

    async def _write_verified(self, payload: list[tuple[Block, list[int] | list[bool]]], what: str) -> None:
        dev = self.endpoint.device_id
        read_back: dict[int, list[int]] = {}  # per block, what function 23 answered with its write
        for block, values in payload:
            if self._plan.read_write(block):
                request = f"write/read holding {block.start}"
                words = [int(v) for v in values]
                reply = await self._conn.request(
                    request,
                    lambda c, b=block, w=words: c.readwrite_registers(
                        read_address=b.start, read_count=b.count, write_address=b.start,
                        values=w, device_id=dev,
                    ),
                )
                if len(reply.registers) != block.count:
                    raise self._conn.failed(request, f"short answer of {len(reply.registers)} values")
                read_back[id(block)] = reply.registers
            elif block.is_bits:
                bits = [bool(v) for v in values]
                await self._conn.request(
                    f"write coils {block.start}",
                    lambda c, b=block, v=bits: c.write_coils(b.start, v, device_id=dev),
                )
            else:
                words = [int(v) for v in values]
                await self._conn.request(
                    f"write holding {block.start}",
                    lambda c, b=block, w=words: c.write_registers(b.start, w, device_id=dev),
                )
        for block, values in payload:
            read = read_back.get(id(block)) or await self._read_block(block)
            if [int(v) for v in read] != [int(v) for v in values]:
                names = [
                    name for name, f in block.fields if block.slice_for(f, read) != block.slice_for(f, values)
                ]
                self.counters.errors += 1
                self.counters.last_error = f"{what} read-back mismatch: {', '.join(names)}"
                raise ParameterMismatch(
                    f"{what} {', '.join(names)} read back from the PLC not as written"
                    f" (wrote {list(values)}, read {list(read)})",
                    station=self.station,
                )

    async def beat(self) -> None:
        """Write the mapping's heartbeat register with its next value: the PLC knows this bridge is
        alive (bridge/modbus/heartbeat.py writes it on its period)."""
        assert self.heartbeat is not None
        address, dev = self.heartbeat.address, self.endpoint.device_id
        if self._beat_value is None:  # what an earlier bridge, or a lost answer, left: the next must differ
            reply = await self._conn.request(
                "read heartbeat", lambda c: c.read_holding_registers(address, count=1, device_id=dev)
            )
            self._beat_value = reply.registers[0] if len(reply.registers) == 1 else 0
        value = next_beat(self._beat_value, self.heartbeat.mode)
        try:
            await self._conn.request(
                "write heartbeat", lambda c: c.write_register(address, value, device_id=dev)
            )
        except StationError:
            # It may have landed with its answer lost: the same value again would be no change
            # to the PLC, so the next beat reads what the register holds first.
            self._beat_value = None
            raise
        self._beat_value, self._beat_at = value, time.monotonic()

    async def start(self, seq: int) -> None:
        """start_seq = `seq`; after a fresh heartbeat if the last is a period old: a PLC that lost
        the bridge while it was away must see it back before the start, or refuse it."""
        beat = self.heartbeat
        if beat is not None and self._beat_before_start and time.monotonic() - self._beat_at >= beat.period_s:
            await self.beat()
        await self._write_command(Command.START_SEQ, seq)

    async def acknowledge(self, seq: int) -> None:
        await self._write_command(Command.ACK_SEQ, seq)

    async def abort(self, seq: int) -> None:
        await self._write_command(Command.ABORT_SEQ, seq)

    async def read_results(self) -> dict[str, Any]:
        """The step's results; CodecError naming each result that is no usable value (NaN, ±Inf,
        undecodable). A finite value outside the mapping's range is kept, and logged."""
        # The last status read brought the input results with it (they stay until the next start,
        # which only the bridge writes); if it failed, they are read on their own.
        words = self._status_words
        values, doubts = await self._read_fields(self._results_apart if words else self._result_blocks)
        if words:
            for block in self._results_in_status:
                offset = block.start - self._status_address
                block_values, block_doubts = self._decoders[id(block)](words[offset : offset + block.count])
                values.update(block_values)
                doubts.update(block_doubts)
        bad = [f"{name}: {d.reason}" for name, d in doubts.items() if d.bad]
        if bad:
            raise CodecError(f"results not usable: {'; '.join(bad)}")
        for name, doubt in doubts.items():
            self._log.warning("result_out_of_range", result=name, reason=doubt.reason)
        return values

    @property
    def telemetry_periods(self) -> list[float]:
        """The poll periods fields of this station set for themselves (docs/telemetry.md)."""
        return sorted(p for p in self._telemetry_groups if p is not None)

    async def read_telemetry(
        self, status_max_age_s: float = 0.0, periods: Collection[float | None] | None = None
    ) -> dict[str, Any]:
        """One poll cycle: the handshake status and the telemetry fields of `periods` (None: the
        station's own period, which also reads the setpoints; default: every field), in as few
        requests as the layout allows (the status block, then one per contiguous block).

        A status read (by the engine's handshake) at most `status_max_age_s` ago is taken instead
        of reading the block again: while a step runs the engine reads it often enough for both.

        Returns the fields decoded anew: all of them at the first poll, then those whose words
        changed (`telemetry` keeps every field's last value)."""
        shared = self.last_status is not None and time.monotonic() - self._status_age_from <= status_max_age_s
        try:
            if not shared:
                await self.status()
        except StationError:
            if not self.status_invalid:
                raise
            self.last_status = None  # the handshake is unusable; telemetry may still be read
        blocks, with_setpoints, read = self._poll_plan(
            self._telemetry_groups.keys() if periods is None else periods
        )
        words = [(id(block), await self._read_block(block)) for block in blocks]
        values, doubts = {}, {}
        for key, raw in words:  # only the fields whose words changed: the same words decode the same
            block_values, block_doubts = self._decoders[key](raw, self._last_words.get(key))
            values.update(block_values)
            doubts.update(block_doubts)
        decoded = values.keys()
        if with_setpoints:
            self.setpoints, setpoint_doubts = await self._read_fields(self._setpoint_blocks)
            doubts.update(setpoint_doubts)
            decoded = decoded | self.setpoints.keys()
        self.counters.telemetry_requests_per_poll = (
            1 + len(blocks) + with_setpoints * len(self._setpoint_blocks) - shared
        )
        # new dicts, never changed in place: a listener compares them with the last poll's
        self.telemetry_before, self.telemetry_changed = self.telemetry, values.keys()
        self.telemetry = {**self.telemetry, **values}
        self._last_words.update(words)  # once kept: a poll that failed half-way must decode it all again
        if self.doubts or doubts:
            self.doubts = {**{k: v for k, v in self.doubts.items() if k not in decoded}, **doubts}
        self.last_read = read
        self.telemetry_read_at = time.time()
        return values

    def _poll_plan(self, periods: Collection[float | None]) -> tuple[list[Block], bool, frozenset[str]]:
        """The telemetry blocks a poll of these field groups reads, whether it reads the setpoints
        (the station's own period does), and every field it reads: worked out once per combination."""
        key = tuple(periods)
        plan = self._poll_plans.get(key)
        if plan is None:
            blocks = [block for period in periods for block in self._telemetry_groups.get(period, [])]
            with_setpoints = None in periods
            read = {name for block in blocks for name, _ in block.fields}
            if with_setpoints:
                read |= self._setpoint_fields.keys()
            plan = self._poll_plans[key] = (blocks, with_setpoints, frozenset(read))
        return plan

    @property
    def requests_per_poll(self) -> int:
        return 1 + len(self._telemetry_blocks) + len(self._setpoint_blocks)


def _encode_blocks(
    blocks: list[Block], values: dict[str, Any], what: str
) -> list[tuple[Block, list[int] | list[bool]]]:
    """Every block's words (or bits), encoded before anything is written (CodecError if not)."""
    payload: list[tuple[Block, list[int] | list[bool]]] = []
    for block in blocks:
        if block.is_bits:
            bits: list[bool] = []
            for name, _ in block.fields:
                if not isinstance(values[name], bool):
                    raise CodecError(f"{what} {name}: bool needs true or false, got {values[name]!r}")
                bits.append(values[name])
            payload.append((block, bits))
            continue
        words: list[int] = []
        for name, f in block.fields:
            try:
                words += codec.encode(f, values[name])
            except CodecError as exc:
                raise CodecError(f"{what} {name}: {exc}") from None
        payload.append((block, words))
    return payload
