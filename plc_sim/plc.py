"""One simulated station PLC: a real Modbus TCP (or RTU) server running the PLC side of the
handshake: its memory, life cycle and fault API here, its scan in program.py, what a request does
on the wire in wire_hook.py. Steps are counted by sequence number for exactly-once proofs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from bridge.errors import ConfigurationError
from bridge.handshake import COMMAND_REGISTERS, PlcState, StatusBlock
from bridge.mapping.model import LineMapping, SerialLine
from plc_sim.faults import CONTROL_REGISTERS, DEFAULT_CONTROL_ADDRESS, Faults
from plc_sim.memory import PlcMemory, build_device, table_sizes
from plc_sim.program import PlcProgram
from plc_sim.wire_hook import RequestHook

log = structlog.get_logger(__name__)

REQUESTS_KEPT = 10_000
TELEMETRY_INTERVAL_S = 0.5


class SimulatedPlc(RequestHook, PlcProgram):
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
        # what a telemetry refresh draws: all simulated fields on the period, the step-sourced ones
        # at each step's end (picked once: at zero cycle time a step ends hundreds of times a second)
        simulated = [f for f in (self.fields[name] for name in self.kind.telemetry) if f.sim is not None]
        self.simulated_fields = simulated
        self.step_sourced_fields = [f for f in simulated if f.sim is not None and f.sim.source is not None]
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
