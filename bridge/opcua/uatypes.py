"""The OPC UA types of a line, generated from its mapping (docs/opcua-model.md).

Everything lives in the types namespace `urn:linebridge:types`, with string NodeIds `T.<name>`:
enumeration DataTypes (with EnumValues and, where the values run 0..n-1, EnumStrings too, so older
and newer clients both show names), ObjectTypes for the line, stations (one subtype per station
type of the mapping), orders (one subtype per product) and steps, and the event types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncua import Node, Server, ua

from bridge.counters import COUNTS
from bridge.domain.model import OrderState
from bridge.mapping.model import LineMapping, Option, RegisterField

# A station's Diagnostics variables: the link's counters (LinkCounters attribute, type), one list
# for the station type here and for the face that publishes them.
DIAGNOSTICS: tuple[tuple[str, ua.VariantType], ...] = (
    *((attribute, ua.VariantType.UInt64) for attribute, _ in COUNTS),
    ("last_error", ua.VariantType.String),
    ("telemetry_requests_per_poll", ua.VariantType.UInt32),
)


def diagnostic_name(attribute: str) -> str:
    """A LinkCounters attribute's variable under Diagnostics: stale_replies → StaleReplies."""
    return "".join(word.capitalize() for word in attribute.split("_"))


# OPC UA's MinDateTime (encoded as 0): a DateTime with no time yet, such as a running order's
# CompletedAt. A null DateTime has no encoding, so one in a Read fails the whole request.
NO_TIME = datetime(1601, 1, 1, tzinfo=UTC)

TYPES_URI = "urn:linebridge:types"
APP_URI_PREFIX = "urn:linebridge:"  # + the line's name: the server's application URI and its instances
STATION_STATES = ["offline", "idle", "busy", "done", "error"]

_VARIANT = {
    "bool": ua.VariantType.Boolean,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "float32": ua.VariantType.Float,
    "float64": ua.VariantType.Double,
    "string": ua.VariantType.String,
}
# Variant types a client may send for a whole number, and for any number.
INTEGER_VARIANTS = frozenset({
    ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
    ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64,
})  # fmt: skip
NUMBER_VARIANTS = INTEGER_VARIANTS | {ua.VariantType.Float, ua.VariantType.Double}
_OPTION_VARIANT = {
    "bool": ua.VariantType.Boolean,
    "string": ua.VariantType.String,
    "integer": ua.VariantType.Int64,
    "number": ua.VariantType.Double,
}
# Engineering units per UNECE Rec. 20 (the UnitId OPC UA expects), for the units our mappings use.
_UNECE = {
    "V": ("VLT", "volt"),
    "Hz": ("HTZ", "hertz"),
    "W": ("WTT", "watt"),
    "s": ("SEC", "second"),
    "ms": ("C26", "millisecond"),
    "g": ("GRM", "gram"),
    "mm": ("MMT", "millimetre"),
    "N·m": ("NU", "newton metre"),
    "kN": ("B47", "kilonewton"),
    "°C": ("CEL", "degree Celsius"),
    "bar": ("BAR", "bar"),
    "h": ("HUR", "hour"),
}


def type_name(text: str) -> str:
    """A BrowseName-safe CamelCase name: 'run_test' → 'RunTest', 'AC-W' → 'ACW'."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def eu_information(unit: str) -> ua.EUInformation:
    code, description = _UNECE.get(unit, ("", unit))
    unit_id = -1
    if code:
        unit_id = 0
        for ch in code.ljust(3)[:3]:
            unit_id = (unit_id << 8) | ord(ch)
    return ua.EUInformation(
        NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(description),
    )


@dataclass
class ModelTypes:
    """NodeIds of the generated types, for building instances and for clients."""

    ns: int
    order_state: ua.NodeId
    station_state: ua.NodeId
    line_type: ua.NodeId
    step_type: ua.NodeId
    order_event: ua.NodeId
    station_event: ua.NodeId
    station_types: dict[str, ua.NodeId] = field(default_factory=dict)
    order_types: dict[str, ua.NodeId] = field(default_factory=dict)
    option_enums: dict[tuple[str, str], ua.NodeId] = field(default_factory=dict)
    field_enums: dict[tuple[str, str], ua.NodeId] = field(default_factory=dict)
    enum_codes: dict[ua.NodeId, dict[Any, int]] = field(default_factory=dict)


def tid(ns: int, name: str) -> ua.NodeId:
    return ua.NodeId(f"T.{name}", ns)


async def add_enum(server: Server, ns: int, name: str, members: list[tuple[str, int]], doc: str = "") -> Node:
    """An enumeration DataType with its definition, EnumValues and (for 0..n-1) EnumStrings."""
    definition = ua.EnumDefinition()
    for member, value in members:
        definition.Fields.append(
            ua.EnumField(
                Value=value,
                DisplayName=ua.LocalizedText(member),
                Description=ua.LocalizedText(member),
                Name=member,
            )
        )
    dtype = await server.nodes.enum_data_type.add_data_type(
        tid(ns, name), ua.QualifiedName(name, ns), doc or None
    )
    await dtype.write_data_type_definition(definition)
    values = [
        ua.EnumValueType(Value=v, DisplayName=ua.LocalizedText(m), Description=ua.LocalizedText(m))
        for m, v in members
    ]
    prop = await dtype.add_property(
        tid(ns, f"{name}.EnumValues"),
        ua.QualifiedName("EnumValues", 0),
        values,
        varianttype=ua.VariantType.ExtensionObject,
        datatype=ua.NodeId(ua.ObjectIds.EnumValueType),
    )
    await prop.write_value_rank(ua.ValueRank.OneDimension)
    if [v for _, v in members] == list(range(len(members))):
        strings = await dtype.add_property(
            tid(ns, f"{name}.EnumStrings"),
            ua.QualifiedName("EnumStrings", 0),
            [ua.LocalizedText(m) for m, _ in members],
            varianttype=ua.VariantType.LocalizedText,
        )
        await strings.write_value_rank(ua.ValueRank.OneDimension)
    return dtype


async def add_variable(
    parent: Node,
    nodeid: ua.NodeId,
    name: str,
    ns: int,
    value: Any,
    vtype: ua.VariantType,
    datatype: ua.NodeId | None = None,
    *,
    mandatory: bool | None = True,
    description: str = "",
    analog: RegisterField | Option | None = None,
    writable: bool = False,
) -> Node:
    """A variable under `parent`; an AnalogItem with EngineeringUnits and EURange when `analog`
    gives the mapping field or option they come from.

    The type definition is set in the AddNodes request itself: the reference a parent keeps to its
    child carries the child's type, and instantiation copies it from there.
    """
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = ua.QualifiedName(name, ns)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent.nodeid
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasComponent)
    item.TypeDefinition = ua.NodeId(
        ua.ObjectIds.AnalogItemType if analog else ua.ObjectIds.BaseDataVariableType
    )
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(description or name)
    attrs.DataType = datatype or ua.NodeId(vtype.value)
    attrs.Value = ua.Variant(value, vtype)
    attrs.ValueRank = ua.ValueRank.Scalar
    access = ua.AccessLevel.CurrentRead.mask | (ua.AccessLevel.CurrentWrite.mask if writable else 0)
    attrs.AccessLevel = access
    attrs.UserAccessLevel = access
    item.NodeAttributes = attrs
    (result,) = await parent.session.add_nodes([item])
    result.StatusCode.check()
    var = Node(parent.session, result.AddedNodeId)
    if mandatory is not None:
        await var.set_modelling_rule(mandatory)
    if analog is not None:
        await _add_analog_properties(var, ns, analog, mandatory=mandatory)
    return var


async def _add_analog_properties(
    var: Node, ns: int, f: RegisterField | Option, *, mandatory: bool | None = True
) -> None:
    """EngineeringUnits and EURange of an AnalogItem, from the mapping."""
    low = f.min if f.min is not None else -1e308
    high = f.max if f.max is not None else 1e308
    base = var.nodeid.Identifier
    rng = await var.add_property(
        ua.NodeId(f"{base}.EURange", ns),
        ua.QualifiedName("EURange", 0),
        ua.Range(Low=low, High=high),
        varianttype=ua.VariantType.ExtensionObject,
        datatype=ua.NodeId(ua.ObjectIds.Range),
    )
    if mandatory is not None:
        await rng.set_modelling_rule(True)
    unit = getattr(f, "unit", None)
    if unit:
        eu = await var.add_property(
            ua.NodeId(f"{base}.EngineeringUnits", ns),
            ua.QualifiedName("EngineeringUnits", 0),
            eu_information(unit),
            varianttype=ua.VariantType.ExtensionObject,
            datatype=ua.NodeId(ua.ObjectIds.EUInformation),
        )
        if mandatory is not None:
            await eu.set_modelling_rule(True)


def field_variant(f: RegisterField) -> ua.VariantType:
    if f.type in ("int16", "uint16", "int32", "uint32") and (f.scale != 1.0 or f.offset != 0.0):
        return ua.VariantType.Double
    if f.type == "enum":
        return ua.VariantType.Int32
    return _VARIANT[f.type]


def option_variant(option: Option) -> ua.VariantType:
    return ua.VariantType.Int32 if option.type == "enum" else _OPTION_VARIANT[option.type]


def option_members(option: Option) -> list[tuple[str, int]]:
    """Enum members of an option: numeric values keep their number, names their position."""
    values = option.values or []
    if all(isinstance(v, int) for v in values):
        return [(str(v), int(v)) for v in values]
    return [(str(v), i) for i, v in enumerate(values)]


async def build_types(server: Server, mapping: LineMapping) -> ModelTypes:
    ns = await server.register_namespace(TYPES_URI)
    order_state = await add_enum(
        server,
        ns,
        "OrderStateEnum",
        [(s.value, i) for i, s in enumerate(OrderState)],
        "ISA-95 job order state of a linebridge order",
    )
    station_state = await add_enum(
        server,
        ns,
        "StationStateEnum",
        [(s, i) for i, s in enumerate(STATION_STATES)],
        "Handshake state of a station PLC; offline when it does not answer, error when its handshake"
        " cannot be trusted (garbage status, or steps the bridge did not start) until cleared",
    )
    types = ModelTypes(
        ns,
        order_state.nodeid,
        station_state.nodeid,
        tid(ns, "LineType"),
        tid(ns, "StepType"),
        tid(ns, "OrderStateChangedEventType"),
        tid(ns, "StationStatusEventType"),
    )
    types.enum_codes[order_state.nodeid] = {s: i for i, s in enumerate(OrderState)}
    types.enum_codes[station_state.nodeid] = {s: i for i, s in enumerate(STATION_STATES)}

    base_object = server.nodes.base_object_type
    line_type = await base_object.add_object_type(types.line_type, ua.QualifiedName("LineType", ns))
    for folder in ("Stations", "Orders"):
        node = await line_type.add_folder(tid(ns, f"LineType.{folder}"), ua.QualifiedName(folder, ns))
        await node.set_modelling_rule(True)

    await _build_station_types(server, mapping, types, base_object)
    await _build_order_types(server, mapping, types, base_object)
    await _build_event_types(server, types)
    return types


async def _build_station_types(server: Server, mapping: LineMapping, types: ModelTypes, base: Node) -> None:
    ns = types.ns
    station = await base.add_object_type(tid(ns, "StationType"), ua.QualifiedName("StationType", ns))
    p = "StationType"
    await add_variable(
        station, tid(ns, f"{p}.State"), "State", ns, 0, ua.VariantType.Int32, types.station_state
    )
    await add_variable(station, tid(ns, f"{p}.Connected"), "Connected", ns, False, ua.VariantType.Boolean)
    await add_variable(station, tid(ns, f"{p}.CurrentOrder"), "CurrentOrder", ns, "", ua.VariantType.String)
    await add_variable(
        station,
        tid(ns, f"{p}.CycleCount"),
        "CycleCount",
        ns,
        0,
        ua.VariantType.UInt32,
        description="Steps the PLC has executed since power-up",
    )
    await add_variable(
        station,
        tid(ns, f"{p}.LastCycleTime"),
        "LastCycleTime",
        ns,
        0.0,
        ua.VariantType.Double,
        description="Duration of the last step, start to done",
        analog=RegisterField(address=0, type="float64", unit="ms", min=0),
    )
    diag = await station.add_object(tid(ns, f"{p}.Diagnostics"), ua.QualifiedName("Diagnostics", ns))
    await diag.set_modelling_rule(True)
    for attribute, vtype in DIAGNOSTICS:
        name = diagnostic_name(attribute)
        value = "" if vtype == ua.VariantType.String else 0
        await add_variable(diag, tid(ns, f"{p}.Diagnostics.{name}"), name, ns, value, vtype)

    for kind_name, kind in mapping.station_types.items():
        tname = f"{type_name(kind_name)}StationType"
        sub = await station.add_object_type(tid(ns, tname), ua.QualifiedName(tname, ns))
        types.station_types[kind_name] = sub.nodeid
        for group, folder in (
            ("telemetry", "Telemetry"),
            ("parameters", "Parameters"),
            ("results", "Results"),
            ("setpoints", "Setpoints"),
        ):
            holder = await sub.add_object(tid(ns, f"{tname}.{folder}"), ua.QualifiedName(folder, ns))
            await holder.set_modelling_rule(True)
            for name, f in getattr(kind, group).items():
                datatype = None
                if f.type == "enum":
                    assert f.values is not None
                    enum = await add_enum(
                        server,
                        ns,
                        f"{type_name(kind_name)}{type_name(name)}Enum",
                        sorted(f.values.items(), key=lambda kv: kv[1]),
                    )
                    datatype = enum.nodeid
                    types.field_enums[(kind_name, name)] = datatype
                    types.enum_codes[datatype] = dict(f.values)
                vtype = field_variant(f)
                await add_variable(
                    holder,
                    tid(ns, f"{tname}.{folder}.{name}"),
                    name,
                    ns,
                    ua.get_default_value(vtype),
                    vtype,
                    datatype,
                    description=f.description,
                    analog=f if f.is_numeric else None,
                    writable=group == "setpoints",
                )


async def _build_order_types(server: Server, mapping: LineMapping, types: ModelTypes, base: Node) -> None:
    ns = types.ns
    step = await base.add_object_type(types.step_type, ua.QualifiedName("StepType", ns))
    for name, vtype, value in (
        ("Station", ua.VariantType.String, ""),
        ("Unit", ua.VariantType.UInt32, 0),
        ("Sequence", ua.VariantType.UInt32, 0),
        ("StartedAt", ua.VariantType.DateTime, NO_TIME),
        ("FinishedAt", ua.VariantType.DateTime, NO_TIME),
        ("ResultCode", ua.VariantType.UInt32, 0),
        ("Parameters", ua.VariantType.String, ""),
        ("Results", ua.VariantType.String, ""),
    ):
        await add_variable(step, tid(ns, f"StepType.{name}"), name, ns, value, vtype)

    order = await base.add_object_type(tid(ns, "OrderType"), ua.QualifiedName("OrderType", ns))
    p = "OrderType"
    await add_variable(order, tid(ns, f"{p}.State"), "State", ns, 0, ua.VariantType.Int32, types.order_state)
    for name, vtype, value in (
        ("Product", ua.VariantType.String, ""),
        ("CurrentStation", ua.VariantType.String, ""),
        ("Progress", ua.VariantType.UInt32, 0),
        ("Quantity", ua.VariantType.UInt32, 0),
        ("Priority", ua.VariantType.Int32, 0),
        ("FaultStation", ua.VariantType.String, ""),
        ("ResultCode", ua.VariantType.UInt32, 0),
        ("CreatedAt", ua.VariantType.DateTime, NO_TIME),
        ("CompletedAt", ua.VariantType.DateTime, NO_TIME),
        ("WaitingFor", ua.VariantType.String, ""),  # why a unit cannot go on (a station away), else ""
    ):
        await add_variable(order, tid(ns, f"{p}.{name}"), name, ns, value, vtype)
    steps = await order.add_folder(tid(ns, f"{p}.Steps"), ua.QualifiedName("Steps", ns))
    await steps.set_modelling_rule(True)

    for product_id, product in mapping.products.items():
        tname = f"{type_name(product_id)}OrderType"
        sub = await order.add_object_type(tid(ns, tname), ua.QualifiedName(tname, ns))
        types.order_types[product_id] = sub.nodeid
        holder = await sub.add_object(tid(ns, f"{tname}.Options"), ua.QualifiedName("Options", ns))
        await holder.set_modelling_rule(True)
        for name, option in product.options.items():
            datatype = None
            if option.type == "enum":
                members = option_members(option)
                enum = await add_enum(
                    server, ns, f"{type_name(product_id)}{type_name(name)}Enum", members, option.description
                )
                datatype = enum.nodeid
                types.option_enums[(product_id, name)] = datatype
                types.enum_codes[datatype] = {
                    v: code for v, (_, code) in zip(option.values or [], members, strict=True)
                }
            vtype = option_variant(option)
            await add_variable(
                holder,
                tid(ns, f"{tname}.Options.{name}"),
                name,
                ns,
                ua.get_default_value(vtype),
                vtype,
                datatype,
                description=option.description,
                analog=option if option.type in ("integer", "number") else None,
            )


async def _build_event_types(server: Server, types: ModelTypes) -> None:
    ns = types.ns
    base = server.nodes.base_event_type
    order_event = await base.add_object_type(
        types.order_event, ua.QualifiedName("OrderStateChangedEventType", ns)
    )
    for name, vtype, datatype in (
        ("OrderId", ua.VariantType.String, None),
        ("NewState", ua.VariantType.Int32, types.order_state),
        ("Station", ua.VariantType.String, None),
        ("ResultCode", ua.VariantType.UInt32, None),
    ):
        prop = await order_event.add_property(
            tid(ns, f"OrderStateChangedEventType.{name}"),
            ua.QualifiedName(name, ns),
            ua.get_default_value(vtype),
            vtype,
            datatype,
        )
        await prop.set_modelling_rule(True)
    station_event = await base.add_object_type(
        types.station_event, ua.QualifiedName("StationStatusEventType", ns)
    )
    for name, vtype in (
        ("Station", ua.VariantType.String),
        ("Connected", ua.VariantType.Boolean),
        ("ResultCode", ua.VariantType.UInt32),
    ):
        prop = await station_event.add_property(
            tid(ns, f"StationStatusEventType.{name}"),
            ua.QualifiedName(name, ns),
            ua.get_default_value(vtype),
            vtype,
        )
        await prop.set_modelling_rule(True)
