"""The mapping's schema: what a YAML line description may say, checked field by field.

Cross-references (routes naming stations, derivations naming options, overlapping registers)
are checked afterwards by `checks.py`, so that every such error is reported with its full path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, StrictInt, StrictStr, model_validator

from bridge.handshake import COMMAND_REGISTERS, STATUS_REGISTERS
from bridge.mapping.fields import RegisterField, StationAlarms
from bridge.mapping.vocabulary import READ_REGISTERS_MAX, ByteOrder, Identifier, ProductId, Scalar, Strict


class Heartbeat(Strict):
    """A holding register the bridge writes on a fixed period, so the PLC can tell a live bridge
    from a dead one (docs/plc-guide.md, "The heartbeat")."""

    address: int = Field(ge=0, le=65535, description="holding register the bridge writes")
    period_s: float = Field(1.0, gt=0, le=60, description="how often the bridge writes it")
    mode: Literal["counter", "toggle"] = Field(
        "counter", description="counter: 1, 2, ... 65535, 1, ...; toggle: 1, 0, 1, ..."
    )
    timeout_s: float | None = Field(
        None, gt=0, description="unchanged this long, the PLC takes the bridge as gone (default 3 periods)"
    )

    @property
    def lost_after_s(self) -> float:
        return self.timeout_s if self.timeout_s is not None else 3 * self.period_s

    @model_validator(mode="after")
    def _timeout_beyond_period(self) -> Heartbeat:
        if self.lost_after_s <= self.period_s:
            raise ValueError(f"timeout_s {self.lost_after_s:g} must exceed period_s {self.period_s:g}")
        return self


class Handshake(Strict):
    """Where the handshake's command block (holding) and status block (input) start."""

    command_address: int = Field(0, ge=0, le=65535)
    status_address: int = Field(0, ge=0, le=65535)
    idle_status_interval_s: float = Field(
        1.0,
        ge=0,
        description="how often a telemetry poll also reads the status block while no step runs at the"
        " station (0: at every poll); a running step reads it at the engine's pace",
    )
    heartbeat: Heartbeat | None = Field(None, description="a register the bridge writes to show it is alive")
    results_with_status: bool = Field(
        False,
        description="read the status block and the input-register results in one request, gap"
        " included (the PLC must answer a read across it; at most 125 registers from the status"
        " block): a finished step's status brings its results, one request less per step",
    )


class StationType(Strict):
    """A kind of station: its register map, shared by every station of the kind."""

    description: str = ""
    cycle_time_s: float = Field(ge=0)
    scan_interval_s: float | None = Field(
        None, gt=0, description="telemetry poll period of this type's stations (default: the bridge's)"
    )
    byte_order: ByteOrder = "big"
    word_order: ByteOrder = "big"
    handshake: Handshake = Handshake()
    parameters: dict[Identifier, RegisterField] = {}
    results: dict[Identifier, RegisterField] = {}
    telemetry: dict[Identifier, RegisterField] = {}
    setpoints: dict[Identifier, RegisterField] = Field(
        default={}, description="station settings an engineer may change from OPC UA, checked and read back"
    )

    @model_validator(mode="after")
    def _results_reachable_with_status(self) -> StationType:
        if not self.handshake.results_with_status:
            return self
        start = self.handshake.status_address
        last = start + READ_REGISTERS_MAX - 1
        for name, f in self.results.items():
            if (
                f.table == "input"
                and not start + STATUS_REGISTERS <= f.address <= last - f.register_count + 1
            ):
                raise ValueError(
                    f"results.{name}: handshake.results_with_status reads inputs {start} to {last} in one"
                    f" request, the status block first; input {f.address} ({f.register_count} registers)"
                    " is not inside after it"
                )
        return self

    @model_validator(mode="after")
    def _heartbeat_apart(self) -> StationType:
        beat = self.handshake.heartbeat
        if beat is None:
            return self
        command = self.handshake.command_address
        if command <= beat.address < command + COMMAND_REGISTERS:
            raise ValueError(
                f"handshake.heartbeat.address {beat.address} is inside the command block"
                f" (holding {command} to {command + COMMAND_REGISTERS - 1})"
            )
        for group, name, f in self.fields():
            if f.table == "holding" and f.address <= beat.address < f.address + f.register_count:
                raise ValueError(f"handshake.heartbeat.address {beat.address} is {group}.{name}'s register")
        return self

    @model_validator(mode="after")
    def _periods_on_telemetry_only(self) -> StationType:
        for group in ("parameters", "results", "setpoints"):
            for name, f in getattr(self, group).items():
                if f.scan_interval_s is not None:
                    raise ValueError(
                        f"{group}.{name}.scan_interval_s: only telemetry fields set their own poll period"
                    )
                if f.alarms is not None:
                    raise ValueError(f"{group}.{name}.alarms: only telemetry fields have limit alarms")
        for name, f in self.telemetry.items():
            if f.alarms is not None and f.type in ("string", "bool", "enum"):
                raise ValueError(f"telemetry.{name}.alarms: limits need a number, {name} is {f.type}")
        return self

    def fields(self) -> Iterator[tuple[str, str, RegisterField]]:
        """(group, name, field) for every parameter, result, telemetry and setpoint field."""
        for group in ("parameters", "results", "telemetry", "setpoints"):
            for name, f in getattr(self, group).items():
                yield group, name, f


class SerialLine(Strict):
    """A Modbus RTU serial line (a hardware-in-the-loop rig): the device and its framing."""

    device: str = Field(min_length=1, description="e.g. /dev/ttyUSB0")
    baudrate: int = Field(19200, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "E"  # Modbus over serial line: even parity by default
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class Endpoint(Strict):
    """Where a station's PLC answers: Modbus TCP at host:port (port 0 lets the simulator pick
    one), or Modbus RTU on a serial line when `serial` is given (host and port are then unused)."""

    host: str = "127.0.0.1"
    port: int = Field(502, ge=0, le=65535)
    device_id: int = Field(1, ge=0, le=255)
    serial: SerialLine | None = None

    def __str__(self) -> str:
        line = self.serial
        if line is not None:
            return f"{line.device} (RTU {line.baudrate} {line.bytesize}{line.parity}{line.stopbits})"
        return f"{self.host}:{self.port}"


class LinkSettings(Strict):
    """How hard the bridge tries one PLC before it calls it away, like a SCADA driver's request
    timeout and attempts before demotion (docs/engine.md, "The Modbus station link")."""

    attempts: int = Field(3, ge=1, le=10, description="tries of one request (a lost frame is tried again)")
    retry_delay_s: float = Field(0.0, ge=0, le=10, description="pause between two tries")
    offline_after: int = Field(
        2, ge=1, le=100, description="failed requests in a row before the station is offline"
    )
    online_after: int = Field(2, ge=1, le=100, description="good requests in a row before it is back online")
    read_write_registers: bool = Field(
        False,
        description="the PLC answers Modbus function 23 (read/write multiple registers): each block of"
        " holding-register parameters is written and read back in one request",
    )
    absent_fault_after_s: float | None = Field(
        None, gt=0, le=7 * 24 * 3600,
        description="an order waiting only on this station faults after it has not answered this long"
        " (none: it waits, showing why)",
    )  # fmt: skip


class Station(Strict):
    type: Identifier
    description: str = ""
    endpoint: Endpoint = Endpoint()
    link: LinkSettings = LinkSettings()
    byte_order: ByteOrder | None = None
    word_order: ByteOrder | None = None


class Option(Strict):
    """One thing a customer may choose, with its allowed values and default."""

    type: Literal["enum", "bool", "string", "integer", "number"]
    values: list[StrictInt | StrictStr] | None = None
    default: Scalar | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = Field(None, ge=0, le=246)
    charset: Literal["printable_ascii", "ascii"] = "printable_ascii"
    description: str = ""
    unit: str | None = Field(None, description="engineering unit of a number (ISA-95 work master parameters)")

    @model_validator(mode="after")
    def _consistent(self) -> Option:
        if (self.type == "enum") != (self.values is not None):
            raise ValueError("values are required for an enum option and allowed only there")
        if self.values is not None:
            if not self.values:
                raise ValueError("an enum option needs at least one value")
            if len(set(self.values)) != len(self.values):
                raise ValueError("enum values must be distinct")
        if self.type == "string" and self.max_length is None:
            raise ValueError("a string option needs max_length")
        if self.type not in ("integer", "number") and (self.min is not None or self.max is not None):
            raise ValueError(f"min and max apply to integer and number options, not {self.type}")
        if self.default is not None:
            reason = self.reject(self.default)
            if reason:
                raise ValueError(f"default {self.default!r} is not allowed: {reason}")
        return self

    def reject(self, value: Any) -> str | None:
        """Why `value` is not allowed for this option, or None when it is."""
        if self.type == "enum":
            assert self.values is not None
            if isinstance(value, bool) or value not in self.values:
                return f"must be one of {', '.join(map(str, self.values))}"
        elif self.type == "bool":
            if not isinstance(value, bool):
                return "must be true or false"
        elif self.type == "string":
            if not isinstance(value, str):
                return "must be a string"
            assert self.max_length is not None
            if len(value) > self.max_length:
                return f"at most {self.max_length} characters, got {len(value)}"
            if not all(32 <= ord(c) < 127 or (self.charset == "ascii" and ord(c) < 128) for c in value):
                return f"only {self.charset.replace('_', ' ')} characters are allowed"
        else:
            numeric = (int,) if self.type == "integer" else (int, float)
            if isinstance(value, bool) or not isinstance(value, numeric):
                return f"must be {'an integer' if self.type == 'integer' else 'a number'}"
            if self.min is not None and value < self.min:
                return f"must be at least {self.min:g}"
            if self.max is not None and value > self.max:
                return f"must be at most {self.max:g}"
        return None


class Quantity(Strict):
    min: int = Field(1, ge=1)
    max: int = Field(50, ge=1)
    default: int = 1

    @model_validator(mode="after")
    def _ordered(self) -> Quantity:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"default {self.default} is outside {self.min}..{self.max}")
        return self


class Derivation(Strict):
    """How one station parameter follows from an order: exactly one rule, no expressions."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    from_: Identifier | None = Field(None, alias="from")
    lookup: Identifier | Annotated[list[Identifier], Field(min_length=1)] | None = None
    table: dict[Any, Any] | None = None
    constant: Scalar | None = None
    linear: Identifier | None = None
    gain: float = 1.0
    offset: float = 0.0

    @property
    def sources(self) -> list[str]:
        if self.lookup is not None:
            return [self.lookup] if isinstance(self.lookup, str) else list(self.lookup)
        return [s for s in (self.from_, self.linear) if s is not None]

    @model_validator(mode="after")
    def _one_rule(self) -> Derivation:
        rules = [
            name
            for name, set_ in (
                ("from", self.from_),
                ("lookup", self.lookup),
                ("constant", self.constant),
                ("linear", self.linear),
            )
            if set_ is not None
        ]
        if len(rules) != 1:
            raise ValueError(
                f"give exactly one of from, lookup, constant, linear (got {', '.join(rules) or 'none'})"
            )
        if (self.lookup is None) != (self.table is None):
            raise ValueError("lookup and table go together")
        if self.linear is None and (self.gain != 1.0 or self.offset != 0.0):
            raise ValueError("gain and offset belong to a linear rule")
        return self


RouteStep = Identifier | list[Identifier]


def alternatives(step: str | list[str]) -> list[str]:
    """The stations that may serve a route step: one, or any of a parallel group."""
    return [step] if isinstance(step, str) else list(step)


class Product(Strict):
    description: str = ""
    options: dict[Identifier, Option]
    quantity: Quantity = Quantity()
    route: list[RouteStep] = Field(min_length=1)
    parameters: dict[Identifier, dict[Identifier, Derivation]] = Field(
        default={}, description="per station type, how each of its parameters is derived"
    )


class LineInfo(Strict):
    name: Identifier
    description: str = ""


DEFAULT_RESULT_CODES: dict[int, str] = {
    0: "ok",
    1: "parameters_rejected",
    2: "check_failed",
    3: "aborted",
    4: "station_fault",
    5: "bridge_lost",
}


class LineMapping(Strict):
    """A whole line: station kinds, stations, products. The root of a mapping file."""

    line: LineInfo
    result_codes: dict[Annotated[int, Field(ge=0, le=65535)], str] = DEFAULT_RESULT_CODES
    station_types: dict[Identifier, StationType]
    stations: dict[Identifier, Station] = Field(min_length=1)
    products: dict[ProductId, Product] = Field(min_length=1)
    alarms: StationAlarms = StationAlarms()
    # (station type, byte order, word order) → the type and its fields settled: stations alike share them
    _resolved: dict[tuple[str, str, str], tuple[StationType, dict[str, RegisterField]]] = PrivateAttr(
        default_factory=dict
    )

    def station_type(self, station: str) -> StationType:
        return self.station_types[self.stations[station].type]

    def resolved_fields(self, station: str) -> dict[str, RegisterField]:
        """A station's fields (every group) with byte and word order settled.

        A field's own order wins, then the station's, then its type's.
        """
        st = self.stations[station]
        kind = self.station_types[st.type]
        byte_default = st.byte_order or kind.byte_order
        word_default = st.word_order or kind.word_order
        key = (st.type, byte_default, word_default)
        cached = self._resolved.get(key)
        if cached is None or cached[0] is not kind:  # a model_copy shares this cache, maybe not the kind
            settled = {"byte_order": byte_default, "word_order": word_default}
            cached = self._resolved[key] = (
                kind,
                {  # fields are frozen: a line of a hundred alike stations keeps one set
                    name: f.model_copy(update={k: getattr(f, k) or v for k, v in settled.items()})
                    for _, name, f in kind.fields()
                },
            )
        return dict(cached[1])
