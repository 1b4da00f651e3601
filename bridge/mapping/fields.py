"""A register field of the mapping: where it lies, its type, scale and range, and what the bridge
does with it (deadband, history, limit alarms) and the simulator puts in it."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import Field, model_validator

from bridge.mapping.vocabulary import (
    BIT_TABLES,
    INTEGER_RANGE,
    REGISTER_COUNT,
    ByteOrder,
    DataType,
    Identifier,
    Scalar,
    Strict,
    Table,
)


class SimBehaviour(Strict):
    """How the simulator fills a result or telemetry field; exactly one kind per field."""

    source: Literal["state", "cycle_count", "last_cycle_ms", "executed_count"] | None = None
    follow: Identifier | None = None
    uniform: tuple[float, float] | None = Field(None, strict=False)  # YAML gives a list
    constant: Scalar | None = None
    nominal: float | None = None
    gain: float = 1.0
    noise: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> SimBehaviour:
        kinds = [
            k for k in ("source", "follow", "uniform", "constant", "nominal") if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of source, follow, uniform, constant, nominal"
                f" (got {', '.join(kinds) or 'none'})"
            )
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError("uniform: low bound above high bound")
        return self


class Deadband(Strict):
    """A telemetry value is published only when it moved more than this since it was last
    published (OPC UA Part 8: absolute, or percent of the EURange, the field's max - min)."""

    absolute: float | None = Field(None, ge=0)
    percent: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _one_kind(self) -> Deadband:
        if (self.absolute is None) == (self.percent is None):
            raise ValueError("give exactly one of absolute, percent")
        return self


class FieldHistory(Strict):
    """Whether a telemetry value's changes are kept for HistoryRead, and for how long."""

    enabled: bool = True
    retention_s: float | None = Field(None, gt=0, description="default: the bridge's history retention")


class AlarmLimit(Strict):
    """One limit of a limit alarm: where it lies (in the field's unit) and how severe crossing it is
    (OPC UA severity, 1 to 1000)."""

    limit: float
    severity: int = Field(ge=1, le=1000)


LIMIT_NAMES = ("high_high", "high", "low", "low_low")  # the most severe first, as Part 9 orders them


class LimitAlarms(Strict):
    """A telemetry value's exclusive limit alarm (OPC UA Part 9): at most one limit is the active
    one. The deadband keeps a value that hovers at a limit from chattering (it clears only once
    back inside by this much); the on-delay keeps a spike from raising it (docs/alarms.md)."""

    high_high: AlarmLimit | None = None
    high: AlarmLimit | None = None
    low: AlarmLimit | None = None
    low_low: AlarmLimit | None = None
    deadband: float = Field(0.0, ge=0, description="in the field's unit")
    on_delay_s: float = Field(0.0, ge=0, le=3600, description="a limit must stand this long to go active")

    @model_validator(mode="after")
    def _ordered(self) -> LimitAlarms:
        given = [(name, getattr(self, name)) for name in reversed(LIMIT_NAMES)]
        given = [(name, limit) for name, limit in given if limit is not None]
        if not given:
            raise ValueError(f"give at least one of {', '.join(LIMIT_NAMES)}")
        for (low_name, low), (high_name, high) in itertools.pairwise(given):
            if not low.limit < high.limit:
                raise ValueError(
                    f"{low_name}.limit {low.limit} must lie below {high_name}.limit {high.limit}"
                )
        return self

    def limits(self) -> list[tuple[str, AlarmLimit]]:
        """(name, limit) of the limits given, the most severe first."""
        return [(name, limit) for name in LIMIT_NAMES if (limit := getattr(self, name)) is not None]


class StationAlarms(Strict):
    """The severities of the alarms every station has (0 turns one off)."""

    offline: int = Field(800, ge=0, le=1000, description="the PLC does not answer")
    held: int = Field(700, ge=0, le=1000, description="the PLC answers, the bridge holds the station")
    plc_fault: int = Field(750, ge=0, le=1000, description="the PLC's status block holds garbage")
    order_faulted: int = Field(600, ge=0, le=1000, description="an order faulted at this station")


class RegisterField(Strict):
    """One typed value in a PLC's memory: where it lives and how it is encoded."""

    table: Table = "holding"
    address: int = Field(ge=0, le=65535)
    type: DataType
    length: int | None = Field(None, ge=1, le=123, description="registers, for strings")
    values: dict[Identifier, Annotated[int, Field(ge=0, le=65535)]] | None = None
    byte_order: ByteOrder | None = None
    word_order: ByteOrder | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    precision: int | None = Field(
        None, ge=0, le=12, description="digits after the decimal point to show (OPC UA ValuePrecision)"
    )
    description: str = ""
    sim: SimBehaviour | None = None
    deadband: Deadband | None = None  # telemetry only
    history: bool | FieldHistory = True  # telemetry only: keep its changes for HistoryRead
    alarms: LimitAlarms | None = None  # telemetry only
    scan_interval_s: float | None = Field(
        None, gt=0, le=86400,
        description="telemetry only: this field's poll period (default: its station type's or the bridge's)",
    )  # fmt: skip

    @property
    def register_count(self) -> int:
        return self.length if self.type == "string" else REGISTER_COUNT[self.type]

    @property
    def is_numeric(self) -> bool:
        return self.type in INTEGER_RANGE or self.type.startswith("float")

    @model_validator(mode="after")
    def _consistent(self) -> RegisterField:
        if self.type == "string":
            if self.length is None:
                raise ValueError("a string field needs length (registers, 2 characters each)")
        elif self.length is not None:
            raise ValueError(f"length applies to strings only, not {self.type}")
        if (self.type == "enum") != (self.values is not None):
            raise ValueError("values are required for an enum field and allowed only there")
        if self.values is not None and len(set(self.values.values())) != len(self.values):
            raise ValueError("enum values must have distinct codes")
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(f"a {self.table} holds one bit; type must be bool, not {self.type}")
        if not self.is_numeric and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale and offset apply to numbers, not {self.type}")
        if not self.is_numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"min and max apply to numbers, not {self.type}")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.deadband is not None and not self.is_numeric:
            raise ValueError(f"a deadband applies to numbers, not {self.type}")
        percent = self.deadband is not None and self.deadband.percent is not None
        if percent and (self.min is None or self.max is None):
            raise ValueError("a percent deadband needs min and max (the EURange it is a percent of)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.address + self.register_count - 1 > 65535:
            raise ValueError(f"address {self.address} + {self.register_count} registers runs past 65535")
        if self.type in INTEGER_RANGE:
            self._check_bounds_fit()
        return self

    def _check_bounds_fit(self) -> None:
        raw_low, raw_high = INTEGER_RANGE[self.type]
        ends = sorted((raw_low * self.scale + self.offset, raw_high * self.scale + self.offset))
        for name in ("min", "max"):
            bound = getattr(self, name)
            if bound is not None and not ends[0] <= bound <= ends[1]:
                raise ValueError(
                    f"{name} {bound} cannot be represented by {self.type}"
                    f" (range {ends[0]:g} to {ends[1]:g} after scale and offset)"
                )


def history_of(f: RegisterField) -> FieldHistory:
    return f.history if isinstance(f.history, FieldHistory) else FieldHistory(enabled=f.history)


def deadband_of(f: RegisterField) -> float:
    """The deadband in engineering units (0: every change is published)."""
    if f.deadband is None:
        return 0.0
    if f.deadband.absolute is not None:
        return f.deadband.absolute
    percent, low, high = f.deadband.percent, f.min, f.max
    assert percent is not None  # the model allows a percent deadband only with min and max
    assert low is not None
    assert high is not None
    return percent / 100 * (high - low)
