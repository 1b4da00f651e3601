"""One simulated station PLC: a real Modbus TCP server running the PLC side of the handshake.

The program is level-based like a PLC scan: every client write (and every due timer) wakes a scan
that compares the command block with the status it last published, so lost or repeated edges
cannot start a step twice. Steps are counted by sequence number for exactly-once proofs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from bridge.errors import CodecError, ConfigurationError
from bridge.handshake import COMMAND_REGISTERS, Command, PlcState, ResultCode, StatusBlock
from bridge.mapping import codec
from bridge.mapping.fields import RegisterField
from bridge.mapping.model import LineMapping, SerialLine
from bridge.mapping.vocabulary import BIT_TABLES
from plc_sim.faults import CONTROL_REGISTERS, DEFAULT_CONTROL_ADDRESS, Faults
from plc_sim.memory import PlcMemory, build_device, internal_access, table_sizes

log = structlog.get_logger(__name__)

_WRITE_FCS = frozenset({5, 6, 15, 16, 22, 23})
REQUESTS_KEPT = 10_000
TELEMETRY_INTERVAL_S = 0.5


class SimulatedPlc:
    """The PLC of one station of a mapping, serving on `host:port` (port 0 picks a free one)."""

    def __init__(
        self,
        mapping: LineMapping,
        station: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        speed: float = 1.0,
        control_address: int = DEFAULT_CONTROL_ADDRESS,
        faults: Faults | None = None,
        seed: int | None = None,
        allow: list[str] | None = None,
        telemetry_period_s: float = TELEMETRY_INTERVAL_S,
        serial: SerialLine | None = None,
    ) -> None:
        if speed < 0:
            raise ConfigurationError("speed must be 0 (no cycle time) or positive")
        self.station = station
        self.type_name = mapping.stations[station].type
        self.kind = mapping.station_type(station)
        self.fields = mapping.resolved_fields(station)
        endpoint = mapping.stations[station].endpoint
        self.host = host
        self.port = endpoint.port if port is None else port
        self.serial = serial  # Modbus RTU on this line instead of TCP (a rig's serial port)
        self.device_id = endpoint.device_id
        self.cycle_time_s = 0.0 if speed == 0 else self.kind.cycle_time_s / speed
        self.control_address = control_address
        self.faults = faults or Faults()
        try:
            self.allow = [ipaddress.ip_network(net, strict=False) for net in allow or []]
        except ValueError as exc:
            raise ConfigurationError(f"--allow: {exc}") from None
        self.executed: Counter[int] = Counter()  # every run of each seq, power cycles included (for tests)
        self._run_since_power_up: set[int] = set()  # what the PLC itself remembers
        self.last_reject_reason = ""
        self._status = StatusBlock(PlcState.IDLE, 0, 0, 0, 0, 0, 0)
        self._cycle_count = 0
        self._last_cycle_ms = 0
        self._started_at = 0.0
        self._due: float | None = None
        self._result_code = 0
        self._telemetry_due = 0.0
        self.telemetry_period_s = telemetry_period_s
        self._random = random.Random(seed)
        self._wake = asyncio.Event()
        self._start_written = False  # a client wrote start_seq since the last scan (repeat_start)
        self._late_results: tuple[float, dict[str, Any]] | None = None  # done_early: when, and from what
        self._forgetting: set[asyncio.Task[None]] = set()
        # The bridge's heartbeat, if the mapping declares one: watched from its first change on.
        self.heartbeat = self.kind.handshake.heartbeat
        self._beat: int | None = None  # the value last seen
        self._beat_at: float | None = None  # time.monotonic() it last changed; None: not seen beating yet
        self.bridge_lost = ""  # why new starts are refused: the heartbeat stopped ("" while it beats)
        self._changed = asyncio.Condition()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._scan_task: asyncio.Task[None] | None = None
        self._memory: PlcMemory | None = None
        self._log = log.bind(station=station)
        self.observer: Callable[[str, int], None] | None = None
        # Every request a client made, as (function code, first address), newest last: what a
        # bridge asks of a PLC, for tests and for tracing a rig (a write that reads too counts once).
        self.requests: deque[tuple[int, int]] = deque(maxlen=REQUESTS_KEPT)
        # The same requests with how many values each wrote or read: (function code, address, count).
        self.request_spans: deque[tuple[int, int, int]] = deque(maxlen=REQUESTS_KEPT)
        self._check_control_block()
        self._parameter_spans = self._spans(self.kind.parameters)
        self._result_spans = self._spans(self.kind.results)
        self._setpoint_spans = self._spans(self.kind.setpoints)

    def _spans(self, names: Iterable[str]) -> list[tuple[str, int, int]]:
        return [
            (
                self.fields[n].table,
                self.fields[n].address,
                self.fields[n].address + self.fields[n].register_count,
            )
            for n in names
        ]

    def _observe(self, event: str) -> None:
        """Tell `observer` (tests, HIL tracing) what a client just did, before it gets an answer.

        Events: parameters_written, setpoints_written, start_written, ack_written, abort_written,
        results_read, and step_done (the PLC finished a step).
        """
        if self.observer is not None:
            self.observer(event, self._status.accepted_seq)

    def _check_control_block(self) -> None:
        end = self.control_address + CONTROL_REGISTERS - 1
        cmd = self.kind.handshake.command_address
        taken = [(cmd, cmd + COMMAND_REGISTERS - 1, "handshake.command_address")]
        taken += [
            (f.address, f.address + f.register_count - 1, name)
            for name, f in self.fields.items()
            if f.table == "holding"
        ]
        for start, stop, name in taken:
            if start <= end and self.control_address <= stop:
                raise ConfigurationError(
                    f"station {self.station}: simulator control registers {self.control_address}-{end}"
                    f" overlap {name} (holding {start}-{stop}); choose another --control-address"
                )

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        sizes = table_sizes(self.kind, self.control_address, CONTROL_REGISTERS)
        device = build_device(sizes, self.device_id, self._on_request)
        line = self.serial
        if line is not None:
            self._server = ModbusSerialServer(
                device, framer=FramerType.RTU, port=line.device, baudrate=line.baudrate, parity=line.parity,
                stopbits=line.stopbits, bytesize=line.bytesize,
            )  # fmt: skip
        else:
            address = (self.host, self.port)
            self._server = ModbusTcpServer(device, address=address, trace_connect=self._on_connect)
        self._memory = PlcMemory(self._server, self.device_id)
        # A PLC answers with its real status and telemetry from the first request on.
        await self._memory.write("holding", self.control_address, self.faults.to_registers())
        for name, f in self.kind.setpoints.items():  # a PLC powers up with its retained settings
            if f.sim is not None:
                await self._memory.write_field(self.fields[name], f.sim.constant)
        await self._publish_status()
        await self._refresh_telemetry()
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError:  # pymodbus's word for any failure to listen
            self._server = None
            where = line.device if line is not None else f"{self.host}:{self.port}"
            raise OSError(
                f"station {self.station}: cannot listen on {where}"
                " (in use, or not this machine's)"
            ) from None
        if line is None:
            listener: Any = self._server.transport
            self.port = listener.sockets[0].getsockname()[1]
        self._scan_task = asyncio.create_task(self._scan_loop(), name=f"plc-{self.station}")
        self._log.info(
            "plc_started", host=self.host, port=self.port, serial=line.device if line else None,
            device_id=self.device_id,
        )  # fmt: skip

    async def stop(self) -> None:
        if self._scan_task is not None:
            self._scan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan_task
            self._scan_task = None
        if self._server is not None:
            self.drop_connections()
            await self._server.shutdown()
            self._server = None
        self._log.info("plc_stopped")

    async def __aenter__(self) -> SimulatedPlc:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def memory(self) -> PlcMemory:
        if self._memory is None:
            raise RuntimeError(f"PLC {self.station} is not started")
        return self._memory

    @property
    def status(self) -> StatusBlock:
        return self._status

    @property
    def watching_heartbeat(self) -> bool:
        """The bridge's heartbeat has been seen to change: its absence now refuses starts."""
        return self._beat_at is not None

    async def power_cycle(self) -> None:
        """A restart that keeps nothing: the status block and the command block back to zero, a
        running step gone (what the bridge must not take as "never started", docs/handshake.md)."""
        self._due = None
        self._status = StatusBlock(PlcState.IDLE, 0, 0, 0, 0, 0, 0)
        self._run_since_power_up.clear()
        self._beat = self._beat_at = None
        self.bridge_lost = ""
        await self.memory.write("holding", self.kind.handshake.command_address, [0] * COMMAND_REGISTERS)
        await self._publish_status()
        self._log.warning("plc_power_cycled")

    # -- fault injection (Python API) -------------------------------------------------------

    async def set_fault(self, name: str, value: int) -> None:
        """Set one fault setting, mirrored into the simulator control registers."""
        offset = Faults.names().index(name)
        self.faults.set_register(offset, value)
        await self.memory.write("holding", self.control_address + offset, [value & 0xFFFF])
        self._wake.set()
        await self._notify_waiters()

    def drop_connections(self) -> None:
        """Close every client connection now, as a PLC losing its network would."""
        if self._server is not None:
            for connection in list(getattr(self._server, "active_connections", {}).values()):
                connection.close()

    def _on_connect(self, connected: bool) -> None:
        """Close, at once, any connection from an address outside `allow` (when it is set)."""
        if not connected and self.faults.forget_on_disconnect:
            task = asyncio.get_running_loop().create_task(self._forget())
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)
        if not connected or not self.allow or self._server is None:
            return
        for connection in list(self._server.active_connections.values()):
            transport = connection.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            if peer is None:
                continue
            address = ipaddress.ip_address(peer[0])
            if not any(address in net for net in self.allow):
                self._log.warning("client_refused", peer=str(address))
                connection.close()

    async def _forget(self) -> None:
        """forget_on_disconnect: the status block cleared, as a PLC tying the handshake to a connection."""
        self._due = None
        self._status = StatusBlock(PlcState.IDLE, 0, 0, 0, 0, self._status.executed_count, 0)
        await self._publish_status()
        self._log.warning("fault_status_forgotten")

    async def wait_for(self, predicate: Any, timeout_s: float = 5.0) -> None:
        """Wait until `predicate(self)` holds; for tests and tools that synchronise on state."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    # -- the request hook -------------------------------------------------------------------

    async def _on_request(
        self,
        function_code: int,
        _start: int,
        address: int,
        count: int,
        _registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if internal_access.get():
            return None
        if values is not None or function_code not in _WRITE_FCS:  # a write's read half: the same request
            self.requests.append((function_code, address))
            self.request_spans.append((function_code, address, count if values is None else len(values)))
        is_write = values is not None and function_code in _WRITE_FCS
        holding = function_code in (3, 6, 16, 22, 23)
        touches_control = (
            holding
            and address < self.control_address + CONTROL_REGISTERS
            and (address + count > self.control_address)
        )
        if touches_control:
            if is_write:
                assert values is not None
                for i, value in enumerate(values):
                    offset = address + i - self.control_address
                    if 0 <= offset < CONTROL_REGISTERS:
                        self.faults.set_register(offset, int(value))
                self._wake.set()
            return None
        if self.faults.drop_next > 0:
            self.faults.drop_next -= 1
            await self.memory.write("holding", self.control_address + 3, [self.faults.drop_next])
            self._log.info("fault_connection_dropped", function_code=function_code, address=address)
            self.drop_connections()
            await self._notify_waiters()
            return None
        if self.faults.corrupt_next and function_code in (3, 23) and values is None:
            await self._corrupt_first_parameter(_start, address, count, _registers)
        if self.faults.clamp_setpoints and is_write and values:
            self._clamp_setpoint(function_code, address, count, values)
        if self.faults.delay_ms:
            await asyncio.sleep(self.faults.delay_ms / 1000)
        if self.faults.exception_code:
            try:
                return ExcCodes(self.faults.exception_code)
            except ValueError:
                return ExcCodes.DEVICE_FAILURE
        if is_write:
            command = self.kind.handshake.command_address + Command.START_SEQ
            if function_code in (6, 16, 23) and address <= command < address + len(values or []):
                self._start_written = True
            self._wake.set()
        if self.observer is not None:
            self._classify(function_code, address, count, values)
        return None

    def _classify(self, function_code: int, address: int, count: int, values: object) -> None:
        table = {
            1: "coil",
            2: "discrete_input",
            3: "holding",
            4: "input",
            5: "coil",
            6: "holding",
            15: "coil",
            16: "holding",
            23: "holding",
        }.get(function_code)
        if table is None:
            return
        # Writes carry their values; a read's count is in registers (bit reads: approximately).
        end = address + (count if values is None else len(values))  # type: ignore[arg-type]
        if values is not None:
            command = self.kind.handshake.command_address
            for offset, name in enumerate(("start_written", "ack_written", "abort_written")):
                if table == "holding" and address <= command + offset < end:
                    self._observe(name)
            if any(t == table and a < end and address < b for t, a, b in self._parameter_spans):
                self._observe("parameters_written")
            if any(t == table and a < end and address < b for t, a, b in self._setpoint_spans):
                self._observe("setpoints_written")
        elif any(t == table and a < end and address < b for t, a, b in self._result_spans):
            self._observe("results_read")

    def _clamp_setpoint(
        self, function_code: int, address: int, count: int, values: list[int] | list[bool]
    ) -> None:
        """Alter a setpoint write before it lands (pymodbus applies this very list after the hook)."""
        table = "coil" if function_code in (5, 15) else "holding"
        if not any(t == table and a < address + count and address < b for t, a, b in self._setpoint_spans):
            return
        values[0] = (not values[0]) if table == "coil" else int(values[0]) ^ 0x0001
        self._log.info("fault_setpoint_clamped", table=table, address=address)

    async def _corrupt_first_parameter(
        self, start: int, address: int, count: int, registers: list[int]
    ) -> None:
        """Flip the low bit of the first holding parameter if this read covers it."""
        first = min(
            (self.fields[n] for n in self.kind.parameters if self.fields[n].table == "holding"),
            key=lambda f: f.address,
            default=None,
        )
        if first is None or not address <= first.address < address + count:
            return
        registers[first.address - start] ^= 0x0001
        await self.set_fault("corrupt_next", 0)
        self._log.info("fault_parameter_corrupted", address=first.address)

    # -- the PLC program --------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        internal_access.set(True)
        while True:
            try:
                async with asyncio.timeout(self._sleep_s()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._scan()
            except Exception:  # a simulator bug must not silently kill the PLC
                self._log.exception("plc_scan_failed")
                raise

    def _sleep_s(self) -> float:
        now = time.monotonic()
        deadlines = [self._telemetry_due]
        if self._late_results is not None:
            deadlines.append(self._late_results[0])
        if self.faults.self_ack and self._status.state == PlcState.DONE:
            deadlines.append(now)
        if self.heartbeat is not None and self._beat_at is not None and not self.bridge_lost:
            deadlines.append(self._beat_at + self.heartbeat.lost_after_s)
        if self._due is not None and not self.faults.stall:
            deadlines.append(self._due)
        return max(0.0, min(deadlines) - now)

    async def _scan(self) -> None:
        words = [
            int(w)
            for w in await self.memory.read("holding", self.kind.handshake.command_address, COMMAND_REGISTERS)
        ]
        start_seq, ack_seq, abort_seq = (
            words[Command.START_SEQ],
            words[Command.ACK_SEQ],
            words[Command.ABORT_SEQ],
        )
        if self.heartbeat is not None and not self.faults.ignore_heartbeat:
            await self._watch_heartbeat(self.heartbeat.address, self.heartbeat.lost_after_s)
        status = self._status
        repeated, self._start_written = self._start_written and bool(self.faults.repeat_start), False
        if self._late_results is not None and time.monotonic() >= self._late_results[0]:
            params, self._late_results = self._late_results[1], None
            await self._write_results(params)
        if status.state == PlcState.BUSY:
            if abort_seq == status.accepted_seq:
                await self._finish(ResultCode.ABORTED)
            elif self._due is not None and time.monotonic() >= self._due and not self.faults.stall:
                await self._finish(self._result_code)
        elif status.state == PlcState.DONE and ack_seq == status.done_seq:
            await self._set_status(state=PlcState.IDLE, acked_seq=ack_seq)
        elif status.state == PlcState.DONE and self.faults.self_ack:
            await self._set_status(state=PlcState.IDLE)
        if self._status.state == PlcState.IDLE and (
            start_seq not in (0, self._status.accepted_seq) or (repeated and start_seq != 0)
        ):
            await self._accept(start_seq)
        if time.monotonic() >= self._telemetry_due:
            await self._refresh_telemetry()

    async def _watch_heartbeat(self, address: int, lost_after_s: float) -> None:
        """What docs/plc-guide.md asks of a PLC: the bridge counts as gone once its heartbeat has
        not changed for `lost_after_s`; a running step finishes, new starts are refused, and the
        PLC says so, until the heartbeat moves again."""
        (value,) = await self.memory.read("holding", address, 1)
        now = time.monotonic()
        if self._beat is not None and value != self._beat:
            first, self._beat_at = self._beat_at is None, now
            if first:
                await self._notify_waiters()
            if self.bridge_lost:
                self._log.info("bridge_heartbeat_back", was=self.bridge_lost)
                self.bridge_lost = ""
                await self._notify_waiters()
        self._beat = int(value)
        if self._beat_at is not None and not self.bridge_lost and now - self._beat_at > lost_after_s:
            self.bridge_lost = f"no bridge heartbeat for {now - self._beat_at:.1f} s (holding {address})"
            self._log.warning("bridge_heartbeat_lost", reason=self.bridge_lost)
            await self._notify_waiters()

    async def _accept(self, seq: int) -> None:
        """Latch the parameters, check them and start the cycle of step `seq`."""
        reexecuted = self._status.reexecuted_count + (1 if seq in self._run_since_power_up else 0)
        self._run_since_power_up.add(seq)
        self.executed[seq] += 1
        await self._set_status(
            state=PlcState.BUSY,
            accepted_seq=seq,
            result_code=0,
            executed_count=self._status.executed_count + 1,
            reexecuted_count=reexecuted,
        )
        self._started_at = time.monotonic()
        self._due = self._started_at + self.cycle_time_s
        params = await self._read_parameters()
        bound = self._log.bind(seq=seq)
        if self.bridge_lost:
            self._result_code = ResultCode.BRIDGE_LOST
            self._due = self._started_at
            self.last_reject_reason = self.bridge_lost
            bound.warning("start_refused_bridge_lost", reason=self.bridge_lost)
        elif params is None:
            self._result_code = ResultCode.PARAMETERS_REJECTED
            self._due = self._started_at
            bound.warning("step_rejected", reason=self.last_reject_reason)
        elif self.faults.reject_next:
            self._result_code = self.faults.reject_next
            self._due = self._started_at
            await self.set_fault("reject_next", 0)
            bound.info("step_rejected_by_fault", result_code=self._result_code)
        elif self._random.random() * 1000 < self.faults.fault_permille:
            self._result_code = ResultCode.STATION_FAULT
        else:
            self._result_code = ResultCode.OK
            if self.faults.done_early:  # results cleared now, written only after "done" shows
                await self._clear_results()
                self._late_results = (float("inf"), params)
            else:
                await self._write_results(params)
        bound.info("step_accepted", cycle_time_s=self.cycle_time_s)
        if self._due <= time.monotonic() and not self.faults.stall:
            await self._finish(self._result_code)

    async def _read_parameters(self) -> dict[str, Any] | None:
        """The parameters as written, or None (with the reason kept) if one is not acceptable."""
        params: dict[str, Any] = {}
        for name in self.kind.parameters:
            f = self.fields[name]
            try:
                value = await self.memory.read_field(f)
                if f.is_numeric and not self.faults.accept_any:
                    codec.check_range(f, value)
            except CodecError as exc:
                self.last_reject_reason = f"{name}: {exc}"
                return None
            params[name] = value
        return params

    async def _write_results(self, params: dict[str, Any]) -> None:
        values = {**params, **await self._setpoints()}
        for name in self.kind.results:
            f = self.fields[name]
            if f.sim is not None:
                await self.memory.write_field(f, self._simulated_value(f, values))

    async def _clear_results(self) -> None:
        await self.memory.write_fields([(self.fields[n], _zero(self.fields[n])) for n in self.kind.results])

    async def _setpoints(self) -> dict[str, Any]:
        """The setpoints as they stand in memory: a client may have changed them at any time."""
        values: dict[str, Any] = {}
        for name in self.kind.setpoints:
            try:
                values[name] = await self.memory.read_field(self.fields[name])
            except CodecError:  # garbage written by a client: telemetry following it shows nominal 0
                values[name] = 0
        return values

    async def _finish(self, code: int) -> None:
        self._due = None
        self._cycle_count += 1
        self._last_cycle_ms = round((time.monotonic() - self._started_at) * 1000)
        await self._set_status(state=PlcState.DONE, done_seq=self._status.accepted_seq, result_code=code)
        if self._late_results is not None:
            self._late_results = (time.monotonic() + 0.2, self._late_results[1])
        self._log.info("step_done", seq=self._status.done_seq, result_code=code)
        self._observe("step_done")

    async def _set_status(self, **changes: Any) -> None:
        self._status = StatusBlock(**{**self._status.__dict__, **changes})
        await self._publish_status()
        # A PLC updates its own state and counter registers in the same scan: telemetry that shows
        # the state never lags the status block by a telemetry period.
        await self._refresh_telemetry(step_sourced_only=True)

    async def _publish_status(self) -> None:
        status = self._status
        if self.faults.no_echo:
            status = StatusBlock(status.state, 0, 0, status.result_code, 0, status.executed_count, 0)
        await self.memory.write("input", self.kind.handshake.status_address, status.to_registers())
        await self._notify_waiters()

    async def _notify_waiters(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _refresh_telemetry(self, *, step_sourced_only: bool = False) -> None:
        """Every simulated value on the telemetry period; at a step's end only those that follow the
        step (state, cycle count, cycle time): noise redrawn at every step end kept a line of PLCs
        at zero cycle time busy drawing values no poll would read, and put the period off for ever."""
        if not step_sourced_only:
            self._telemetry_due = time.monotonic() + self.telemetry_period_s
        # only values that follow a setpoint read them; step-sourced ones never do
        setpoints = {} if step_sourced_only else await self._setpoints()
        simulated = [
            f
            for f in (self.fields[name] for name in self.kind.telemetry)
            if f.sim is not None and (f.sim.source is not None or not step_sourced_only)
        ]
        await self.memory.write_fields([(f, self._simulated_value(f, setpoints)) for f in simulated])

    def _simulated_value(self, f: RegisterField, params: dict[str, Any]) -> Any:
        sim = f.sim
        assert sim is not None
        if sim.source is not None:
            if sim.source == "state":
                state = self._status.state
                return state.name.lower() if f.type == "enum" else int(state)
            return {
                "cycle_count": self._cycle_count,
                "last_cycle_ms": self._last_cycle_ms,
                "executed_count": self._status.executed_count,
            }[sim.source]
        if sim.constant is not None:
            return sim.constant
        if sim.uniform is not None:
            value: float = self._random.uniform(*sim.uniform)
        elif sim.follow is not None:
            value = params[sim.follow] * sim.gain + self._random.uniform(-sim.noise, sim.noise)
        else:
            assert sim.nominal is not None
            value = sim.nominal + self._random.uniform(-sim.noise, sim.noise)
        return _fit(f, value)


def _zero(f: RegisterField) -> Any:
    """A field's "nothing here yet" value, one that encodes."""
    if f.type == "bool":
        return False
    if f.type == "string":
        return ""
    if f.type == "enum":
        return next(iter(f.values or {"": 0}))
    return _fit(f, 0.0)


def _fit(f: RegisterField, value: float) -> Any:
    """A simulated number clamped into the field's range and type, so it always encodes."""
    if f.min is not None:
        value = max(value, f.min)
    if f.max is not None:
        value = min(value, f.max)
    if f.table in BIT_TABLES or f.type == "bool":
        return bool(value)
    if f.type.startswith("float"):
        return value
    return round(value) if f.scale == 1.0 and f.offset == 0.0 else round(value / f.scale) * f.scale
