"""The vocabulary of a line's OPC UA types: variant types of mapping fields, engineering units,
enumerations, AnalogItems, the model's type ids (docs/opcua-model.md); type_tree.py builds the
line's types with it.

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
from bridge.mapping.fields import RegisterField
from bridge.mapping.model import Option

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
    "BTU/h": ("2I", "British thermal unit (international table) per hour"),
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
    """EngineeringUnits, EURange and ValuePrecision of an AnalogItem, from the mapping."""
    base = var.nodeid.Identifier

    async def add(name: str, value: Any, **kind: Any) -> None:
        nodeid, browse_name = ua.NodeId(f"{base}.{name}", ns), ua.QualifiedName(name, 0)
        prop = await var.add_property(nodeid, browse_name, value, **kind)
        if mandatory is not None:
            await prop.set_modelling_rule(True)

    low = f.min if f.min is not None else -1e308
    high = f.max if f.max is not None else 1e308
    structure, ids = ua.VariantType.ExtensionObject, ua.ObjectIds
    await add("EURange", ua.Range(Low=low, High=high), varianttype=structure, datatype=ua.NodeId(ids.Range))
    precision = getattr(f, "precision", None)
    if precision is not None:  # Part 8 ValuePrecision: the digits after the point a client shows
        await add("ValuePrecision", ua.Variant(float(precision), ua.VariantType.Double))
    unit = getattr(f, "unit", None)
    if unit:
        units = eu_information(unit)
        await add("EngineeringUnits", units, varianttype=structure, datatype=ua.NodeId(ids.EUInformation))


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
