"""The line's type tree built from its mapping: the ObjectTypes of the line, its stations (a subtype
per station type), orders (a subtype per product) and steps, and the event types, under
`urn:linebridge:types` (docs/opcua-model.md). The vocabulary they are built from (variant types,
engineering units, enumerations, AnalogItems) is uatypes.py's.
"""

from __future__ import annotations

from asyncua import Node, Server, ua

from bridge.domain.model import OrderState
from bridge.mapping.fields import RegisterField
from bridge.mapping.model import LineMapping
from bridge.opcua.uatypes import (
    DIAGNOSTICS,
    NO_TIME,
    STATION_STATES,
    TYPES_URI,
    ModelTypes,
    add_enum,
    add_variable,
    diagnostic_name,
    field_variant,
    option_members,
    option_variant,
    tid,
    type_name,
)


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
