"""Cross-reference rules of a mapping, each issue reported with its full YAML path.

Pydantic has already checked every field on its own; these rules look across fields: registers
that overlap, routes naming unknown stations, derivations naming unknown options or leaving an
enum value out of a table, derived values that do not fit their register.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from bridge.errors import CodecError, MappingIssue
from bridge.handshake import COMMAND_REGISTERS, STATUS_REGISTERS
from bridge.mapping import codec
from bridge.mapping.fields import RegisterField
from bridge.mapping.model import Derivation, LineMapping, Option, Product, StationType, alternatives
from bridge.mapping.vocabulary import BIT_TABLES, ORDER_SOURCES, WRITABLE_TABLES


@dataclass(frozen=True)
class Span:
    """A run of addresses one field occupies in one table."""

    table: str
    start: int
    count: int
    path: str

    @property
    def end(self) -> int:
        return self.start + self.count - 1

    def describe(self) -> str:
        where = f"{self.start}" if self.count == 1 else f"{self.start}-{self.end}"
        return f"{self.path} ({self.table} {where})"


def spans_of(kind_path: str, kind: StationType) -> list[Span]:
    """Every address range a station type uses, handshake blocks included."""
    spans = [
        Span(
            "holding",
            kind.handshake.command_address,
            COMMAND_REGISTERS,
            f"{kind_path}.handshake.command_address",
        ),
        Span(
            "input",
            kind.handshake.status_address,
            STATUS_REGISTERS,
            f"{kind_path}.handshake.status_address",
        ),
    ]
    for group, name, f in kind.fields():
        spans.append(Span(f.table, f.address, f.register_count, f"{kind_path}.{group}.{name}"))
    return spans


def check(mapping: LineMapping) -> list[MappingIssue]:
    """Every cross-reference issue of `mapping`; an empty list means it is usable."""
    issues: list[MappingIssue] = []
    for name, kind in mapping.station_types.items():
        issues += _check_station_type(f"station_types.{name}", kind)
    for name, station in mapping.stations.items():
        if station.type not in mapping.station_types:
            issues.append(
                MappingIssue(
                    f"stations.{name}.type",
                    f"unknown station type {station.type!r}"
                    f" (known: {', '.join(mapping.station_types) or 'none'})",
                )
            )
    for name, product in mapping.products.items():
        issues += _check_product(f"products.{name}", product, mapping)
    return issues + shared_endpoints(mapping)


def shared_endpoints(mapping: LineMapping) -> list[MappingIssue]:
    """Two stations on one PLC address would drive one handshake from two steps at once."""
    issues: list[MappingIssue] = []
    first: dict[tuple[str, int, int], str] = {}
    lines: dict[str, str] = {}
    for name, station in mapping.stations.items():
        ep = station.endpoint
        if ep.serial is not None:  # one client per station: one station per serial line
            if ep.serial.device in lines:
                issues.append(
                    MappingIssue(
                        f"stations.{name}.endpoint.serial.device",
                        f"{ep.serial.device} is station {lines[ep.serial.device]}'s serial line already:"
                        " one station per serial line (a multi-drop bus is not supported yet)",
                    )
                )
            lines.setdefault(ep.serial.device, name)
            continue
        key = (ep.host, ep.port, ep.device_id)
        if key in first:
            issues.append(
                MappingIssue(
                    f"stations.{name}.endpoint",
                    f"same host, port and device_id as station {first[key]} ({ep.host}:{ep.port}"
                    f" device {ep.device_id}): two stations cannot share one PLC",
                )
            )
        first.setdefault(key, name)
    return issues


def _check_station_type(path: str, kind: StationType) -> list[MappingIssue]:
    issues: list[MappingIssue] = []
    spans = spans_of(path, kind)
    for table, group in itertools.groupby(sorted(spans, key=lambda s: s.table), key=lambda s: s.table):
        ordered = sorted(group, key=lambda s: s.start)
        for i, first in enumerate(ordered):
            for second in ordered[i + 1 :]:
                if second.start > first.end:
                    break
                issues.append(
                    MappingIssue(
                        first.path,
                        f"{table} registers overlap: {first.describe()} and {second.describe()}",
                    )
                )
    seen: dict[str, str] = {}
    for group, name, f in kind.fields():
        if name in seen:
            issues.append(
                MappingIssue(f"{path}.{group}.{name}", f"name already used in {path}.{seen[name]}.{name}")
            )
        seen[name] = group
        if group in ("parameters", "setpoints") and f.table not in WRITABLE_TABLES:
            issues.append(
                MappingIssue(
                    f"{path}.{group}.{name}.table",
                    f"{group} are written by the bridge, so they live in holding registers"
                    f" or coils, not {f.table}",
                )
            )
        if group == "setpoints":
            issues += _check_setpoint(f"{path}.{group}.{name}", f)
        followable = {**kind.parameters, **kind.setpoints} if group == "results" else kind.setpoints
        follow = f.sim.follow if f.sim is not None and group != "setpoints" else None
        if follow is not None and follow not in followable:
            issues.append(
                MappingIssue(
                    f"{path}.{group}.{name}.sim.follow",
                    f"unknown {'parameter or setpoint' if group == 'results' else 'setpoint'}"
                    f" {follow!r} (known: {', '.join(followable) or 'none'})",
                )
            )
    return issues


def _check_setpoint(path: str, f: RegisterField) -> list[MappingIssue]:
    """An engineer's write is checked against the mapping alone, so a number needs both bounds,
    and the simulator's starting value (sim.constant, the only behaviour a setpoint has) must fit."""
    issues: list[MappingIssue] = []
    if f.is_numeric and (f.min is None or f.max is None):
        issues.append(
            MappingIssue(path, "a numeric setpoint needs min and max: the range an engineer may set")
        )
    if f.sim is not None:
        if f.sim.constant is None:
            issues.append(
                MappingIssue(f"{path}.sim", "a setpoint's sim gives its starting value only: constant")
            )
        elif f.table not in BIT_TABLES:
            try:
                codec.encode(f, f.sim.constant)
            except CodecError as exc:
                issues.append(MappingIssue(f"{path}.sim.constant", str(exc)))
    return issues


def _check_product(path: str, product: Product, mapping: LineMapping) -> list[MappingIssue]:
    issues: list[MappingIssue] = []
    for option in product.options:
        if option in ORDER_SOURCES:
            issues.append(
                MappingIssue(f"{path}.options.{option}", f"{option!r} is reserved for the order itself")
            )
    route_types: set[str] = set()
    for i, step in enumerate(product.route):
        stations = alternatives(step)
        if not stations:
            issues.append(MappingIssue(f"{path}.route[{i}]", "an empty list of stations"))
        known = [s for s in stations if s in mapping.stations]
        for station in stations:
            if station not in mapping.stations:
                issues.append(
                    MappingIssue(
                        f"{path}.route[{i}]",
                        f"unknown station {station!r} (known: {', '.join(mapping.stations)})",
                    )
                )
        types = {mapping.stations[s].type for s in known}
        if len(types) > 1:
            issues.append(
                MappingIssue(
                    f"{path}.route[{i}]",
                    f"parallel stations must be of one type, got {', '.join(sorted(types))}",
                )
            )
        route_types |= types
    for kind_name, derivations in product.parameters.items():
        kind = mapping.station_types.get(kind_name)
        if kind is None or kind_name not in route_types:
            issues.append(
                MappingIssue(
                    f"{path}.parameters.{kind_name}",
                    f"station type {kind_name!r} is not on this product's route"
                    f" (route types: {', '.join(sorted(route_types))})",
                )
            )
            continue
        for param, rule in derivations.items():
            target = kind.parameters.get(param)
            where = f"{path}.parameters.{kind_name}.{param}"
            if target is None:
                issues.append(
                    MappingIssue(
                        where,
                        f"{kind_name} has no parameter {param!r}"
                        f" (known: {', '.join(kind.parameters) or 'none'})",
                    )
                )
                continue
            issues += _check_derivation(where, rule, target, product)
    for kind_name in sorted(route_types):
        kind = mapping.station_types.get(kind_name)
        if kind is None:
            continue
        derived = product.parameters.get(kind_name, {})
        for param in kind.parameters:
            if param not in derived:
                issues.append(
                    MappingIssue(
                        f"{path}.parameters.{kind_name}",
                        f"no derivation for parameter {param!r}: every parameter of a station on the"
                        " route must be derived",
                    )
                )
    return issues


def _domain(name: str, product: Product) -> list[Any] | None:
    """The finite set of values a source may take, or None when it is open."""
    option = product.options.get(name)
    if option is None:
        return None
    if option.type == "enum":
        return list(option.values or [])
    if option.type == "bool":
        return [False, True]
    return None


def _check_derivation(
    where: str, rule: Derivation, target: RegisterField, product: Product
) -> list[MappingIssue]:
    issues: list[MappingIssue] = []
    unknown = [s for s in rule.sources if s not in product.options and s not in ORDER_SOURCES]
    for source in unknown:
        key = "lookup" if rule.lookup is not None else ("from" if rule.from_ else "linear")
        issues.append(
            MappingIssue(
                f"{where}.{key}",
                f"unknown option {source!r} (options: {', '.join(product.options)};"
                f" order values: {', '.join(ORDER_SOURCES)})",
            )
        )
    if unknown:
        return issues
    if rule.constant is not None:
        issues += _fits(f"{where}.constant", target, rule.constant)
    elif rule.lookup is not None:
        assert rule.table is not None
        issues += _check_table(f"{where}.table", rule.table, rule.sources, target, product)
    elif rule.from_ is not None:
        issues += _check_copy(where, rule.from_, target, product)
    elif rule.linear is not None:
        option = product.options.get(rule.linear)
        numeric = (
            option is None
            or option.type in ("integer", "number")
            or (option.type == "enum" and all(isinstance(v, int) for v in option.values or []))
        )
        if not numeric:
            issues.append(MappingIssue(f"{where}.linear", f"option {rule.linear!r} is not numeric"))
        elif option is not None:
            for value in _sample(option):
                issues += _fits(
                    f"{where}",
                    target,
                    value * rule.gain + rule.offset,
                    label=f"for {rule.linear}={value}",
                )
    return issues


def _sample(option: Option) -> list[Any]:
    """Values worth checking a rule against: the whole domain, or the ends of a range."""
    if option.type == "enum":
        return list(option.values or [])
    if option.type == "bool":
        return [False, True]
    return [v for v in (option.min, option.max) if v is not None]


def _check_copy(where: str, source: str, target: RegisterField, product: Product) -> list[MappingIssue]:
    option = product.options.get(source)
    if option is None:  # an order value
        kind = ORDER_SOURCES[source]
        if (kind == "string") != (target.type == "string"):
            return [MappingIssue(f"{where}.from", f"{source} is {kind}, {target.type} cannot hold it")]
        if kind == "string" and target.length is not None and 2 * target.length < 32:
            return [
                MappingIssue(
                    f"{where}.from",
                    f"{target.length} registers hold {2 * target.length} characters; order ids have up to 32",
                )
            ]
        return []
    if option.type == "string":
        if target.type != "string":
            return [MappingIssue(f"{where}.from", f"string option {source!r} into a {target.type} field")]
        assert option.max_length is not None
        assert target.length is not None
        if option.max_length > 2 * target.length:
            return [
                MappingIssue(
                    f"{where}.from",
                    f"option {source!r} allows {option.max_length} characters but the field holds"
                    f" {2 * target.length} ({target.length} registers)",
                )
            ]
        return []
    issues: list[MappingIssue] = []
    for value in _sample(option):
        issues += _fits(f"{where}.from", target, value, label=f"for {source}={value}")
    return issues


def _check_table(
    where: str, table: dict[Any, Any], sources: list[str], target: RegisterField, product: Product
) -> list[MappingIssue]:
    source, rest = sources[0], sources[1:]
    domain = _domain(source, product)
    if domain is None:
        return [MappingIssue(where, f"a lookup needs an enum or bool option; {source!r} is open-ended")]
    issues: list[MappingIssue] = []
    for value in domain:
        if value not in table:
            issues.append(MappingIssue(where, f"no entry for {source}={value}"))
    for key, entry in table.items():
        if key not in domain:
            issues.append(
                MappingIssue(
                    f"{where}.{key}",
                    f"{key!r} is not a value of {source} ({', '.join(map(str, domain))})",
                )
            )
        elif rest:
            if isinstance(entry, dict):
                issues += _check_table(f"{where}.{key}", entry, rest, target, product)
            else:
                issues.append(MappingIssue(f"{where}.{key}", f"expected a table keyed by {rest[0]}"))
        else:
            issues += _fits(f"{where}.{key}", target, entry)
    return issues


def _fits(where: str, target: RegisterField, value: Any, *, label: str = "") -> list[MappingIssue]:
    """An issue if `value` cannot be written into `target`."""
    if target.table in BIT_TABLES:
        ok = isinstance(value, bool)
        return [] if ok else [MappingIssue(where, f"{value!r} is not a bool {label}".rstrip())]
    try:
        codec.encode(target, value)
    except CodecError as exc:
        return [MappingIssue(where, f"{exc} {label}".rstrip())]
    return []


def register_usage(mapping: LineMapping, station: str) -> dict[str, int]:
    """How many addresses of each table a station's map uses, for the validate summary."""
    kind = mapping.station_type(station)
    usage: dict[str, int] = {}
    for span in spans_of("", kind):
        usage[span.table] = usage.get(span.table, 0) + span.count
    return usage
