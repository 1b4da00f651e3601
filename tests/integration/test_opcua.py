"""The OPC UA face, seen by a real asyncua client: model, methods, errors, events, history."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import Server, ua

from bridge.domain.events import StepChanged
from bridge.domain.model import OrderState, StepPhase
from bridge.handshake import PlcState
from bridge.opcua.face import SCAN_QUEUE
from bridge.opcua.nodeset import export_nodeset
from tests.conftest import AC_LINE
from tests.integration.conftest import holding_but_heartbeat
from tests.integration.opcua_rig import Events, opcua_rig, s

ORDER_STATES = {state: i for i, state in enumerate(OrderState)}
STATION_CHILDREN = {
    "State",
    "Connected",
    "CurrentOrder",
    "CycleCount",
    "LastCycleTime",
    "Telemetry",
    "Parameters",
    "Results",
    "Setpoints",
    "Diagnostics",
    "Alarms",  # the station's alarm conditions (docs/alarms.md)
}


@pytest.fixture
async def rig(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        yield rig


async def names(node) -> set[str]:
    # One Browse, names included: a child may leave between a browse and a read of its name.
    return {ref.BrowseName.Name for ref in await node.get_children_descriptions()}


class StateChanges:
    """Subscription handler collecting data changes of one node."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.changed = asyncio.Event()

    def datachange_notification(self, node, value, data) -> None:
        self.values.append(value)
        self.changed.set()

    async def until(self, value: int, timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s):
            while value not in self.values:
                self.changed.clear()
                await self.changed.wait()


async def until_good(node, timeout_s: float = 5):
    async with asyncio.timeout(timeout_s):
        while not (dv := await node.read_data_value(raise_on_bad_status=False)).StatusCode.is_good():  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.02)
    return dv.Value.Value


async def write(node, value, vtype) -> int:
    """A raw Write, so the test sees the status code the server answered."""
    item = ua.WriteValue(
        NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value, Value=ua.DataValue(ua.Variant(value, vtype))
    )
    (code,) = await node.session.write(ua.WriteParameters(NodesToWrite=[item]))
    return code.value


async def test_documented_paths_and_types(rig, ac_mapping):
    objects = rig.client.nodes.objects
    plant = await objects.get_child([f"{rig.ns}:Plant"])
    line = await plant.get_child([f"{rig.ns}:Lines", f"{rig.ns}:ac_line"])
    assert line.nodeid == rig.line_node.nodeid
    assert await names(line) >= {"Stations", "Orders", "SubmitOrder", "CancelOrder", "SubmitOrder_AC-W"}
    assert (await line.read_type_definition()) == ua.NodeId("T.LineType", rig.types_ns)
    stations = rig.node("Plant.Lines.ac_line.Stations")
    assert await names(stations) == set(ac_mapping.stations)
    for station, spec in ac_mapping.stations.items():
        node = rig.node(f"Plant.Lines.ac_line.Stations.{station}")
        assert await names(node) == STATION_CHILDREN
        kind = ac_mapping.station_types[spec.type]
        assert await names(rig.node(f"Plant.Lines.ac_line.Stations.{station}.Telemetry")) == set(
            kind.telemetry
        )
        assert await names(rig.node(f"Plant.Lines.ac_line.Stations.{station}.Parameters")) == set(
            kind.parameters
        )
        assert await names(rig.node(f"Plant.Lines.ac_line.Stations.{station}.Results")) == set(kind.results)
        assert await names(rig.node(f"Plant.Lines.ac_line.Stations.{station}.Setpoints")) == set(
            kind.setpoints
        )
    diagnostics = rig.node("Plant.Lines.ac_line.Stations.coil.Diagnostics")
    assert await names(diagnostics) >= {"Requests", "Errors", "Reconnects", "LastError"}

    # Numbers are AnalogItems with EngineeringUnits and EURange from the mapping.
    charge = rig.node("Plant.Lines.ac_line.Stations.charge.Parameters.charge_g")
    assert (await charge.read_type_definition()) == ua.NodeId(ua.ObjectIds.AnalogItemType)
    eu = await (await charge.get_child(["0:EngineeringUnits"])).read_value()
    assert eu.DisplayName.Text == "g"
    eu_range = await (await charge.get_child(["0:EURange"])).read_value()
    assert (eu_range.Low, eu_range.High) == (100, 2000)
    assert await charge.read_data_type() == ua.NodeId(ua.ObjectIds.UInt16)
    # the mapping's `precision` is the AnalogItem's ValuePrecision (Part 8); none where none is given
    furnace = rig.node("Plant.Lines.ac_line.Stations.coil.Telemetry.furnace_temp_c")
    assert await (await furnace.get_child(["0:ValuePrecision"])).read_value() == 1.0
    assert "ValuePrecision" not in {(await p.read_browse_name()).Name for p in await charge.get_properties()}

    # Enumerations carry EnumValues (and EnumStrings where values run 0..n-1) besides the definition.
    state = rig.node("Plant.Lines.ac_line.Stations.coil.State")
    enum = rig.client.get_node(await state.read_data_type())
    assert (await enum.read_browse_name()).Name == "StationStateEnum"
    strings = await (await enum.get_child(["0:EnumStrings"])).read_value()
    assert [t.Text for t in strings] == ["offline", "idle", "busy", "done", "error"]
    capacity = rig.client.get_node(ua.NodeId("T.ACWCapacityBtuEnum", rig.types_ns))
    values = await (await capacity.get_child(["0:EnumValues"])).read_value()
    assert [(v.Value, v.DisplayName.Text) for v in values] == [
        (9000, "9000"),
        (12000, "12000"),
        (18000, "18000"),
        (24000, "24000"),
    ]
    definition = await capacity.read_data_type_definition()
    assert [f.Value for f in definition.Fields] == [9000, 12000, 18000, 24000]
    enums = await rig.client.load_enums()
    assert "OrderStateEnum" in enums


async def test_json_and_typed_submit_reach_completed_with_the_simulators_results(rig):
    chassis = rig.line["chassis"]
    await chassis.set_fault("stall", 1)  # hold the first step so the subscription sees every state
    options = json.dumps({"capacity_btu": 18000, "quantity": 2})
    result = await rig.call("SubmitOrder", s("J-1"), s("AC-W"), s(options))
    assert result.StatusCode.is_good(), result
    order_node = rig.client.get_node(result.OutputArguments[0].Value)
    assert order_node.nodeid == ua.NodeId("Plant.Lines.ac_line.Orders.J-1", rig.ns)
    changes = StateChanges()
    subscription = await rig.client.create_subscription(10, changes)
    await subscription.subscribe_data_change(await order_node.get_child([f"{rig.types_ns}:State"]))
    await chassis.wait_for(lambda plc: plc.status.state == PlcState.BUSY)
    await changes.until(ORDER_STATES[OrderState.RUNNING])

    typed = await rig.line_node.call_method(
        f"{rig.ns}:SubmitOrder_AC-W",
        s("T-1"),
        ua.Variant(1, ua.VariantType.UInt32),
        ua.Variant(24000, ua.VariantType.Int32),  # capacity_btu: the enum's value is the BTU figure
        ua.Variant(0, ua.VariantType.Int32),  # compressor: fixed_speed
        ua.Variant(3, ua.VariantType.Int32),  # panel_color: ocean_blue
        ua.Variant(1, ua.VariantType.Int32),  # panel_finish: gloss
        ua.Variant(True, ua.VariantType.Boolean),
        s("ANNA"),
        ua.Variant(0, ua.VariantType.Int32),  # region: eu_230v_50hz
    )
    assert typed == ua.NodeId("Plant.Lines.ac_line.Orders.T-1", rig.ns)
    await chassis.set_fault("stall", 0)
    await changes.until(ORDER_STATES[OrderState.COMPLETED])
    assert changes.values[-1] == ORDER_STATES[OrderState.COMPLETED]
    await subscription.delete()

    t1 = rig.bridge.get("T-1")
    assert t1.options == {
        "capacity_btu": 24000,
        "compressor": "fixed_speed",
        "panel_color": "ocean_blue",
        "panel_finish": "gloss",
        "wifi_module": True,
        "engraving": "ANNA",
        "region": "eu_230v_50hz",
    }
    async with asyncio.timeout(10):
        while rig.bridge.get("T-1").state != OrderState.COMPLETED:  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    color = await rig.node("Plant.Lines.ac_line.Orders.T-1.Options.panel_color").read_value()
    assert color == 3
    assert await rig.node("Plant.Lines.ac_line.Orders.J-1.Progress").read_value() == 2
    steps = rig.node("Plant.Lines.ac_line.Orders.J-1.Steps")
    assert len(await steps.get_children()) == 14
    charge_step = next(st for st in rig.bridge.get("J-1").steps if st.station == "charge")
    node = rig.node(f"Plant.Lines.ac_line.Orders.J-1.Steps.{charge_step.unit_index}-3-charge")
    shown = json.loads(await (await node.get_child([f"{rig.types_ns}:Results"])).read_value())
    assert shown == charge_step.results
    assert abs(shown["actual_charge_g"] - 980) <= 10


async def test_refused_calls_say_which_argument_and_why(rig):
    result = await rig.call("SubmitOrder", s("BAD-1"), s("AC-W"), s('{"capacity_btu": 10000}'))
    assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument
    assert [r.value for r in result.InputArgumentResults] == [0, 0, ua.StatusCodes.BadInvalidArgument]
    assert (
        "options.capacity_btu: must be one of 9000" in result.InputArgumentDiagnosticInfos[2].AdditionalInfo
    )

    result = await rig.call("SubmitOrder", s("bad id"), s("AC-W"), s("{}"))
    assert result.InputArgumentResults[0].value == ua.StatusCodes.BadInvalidArgument
    result = await rig.call("SubmitOrder", s("BAD-2"), s("AC-X"), s("{}"))
    assert result.InputArgumentResults[1].value == ua.StatusCodes.BadInvalidArgument
    result = await rig.call("SubmitOrder", s("BAD-3"), s("AC-W"), s("{not json"))
    assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument
    assert "not valid JSON" in result.InputArgumentDiagnosticInfos[2].AdditionalInfo
    result = await rig.call("SubmitOrder", s("BAD-4"), s("AC-W"))
    assert result.StatusCode.value == ua.StatusCodes.BadArgumentsMissing
    result = await rig.call("SubmitOrder", s("BAD-5"), s("AC-W"), ua.Variant(5, ua.VariantType.Int32))
    assert result.StatusCode.value == ua.StatusCodes.BadTypeMismatch

    typed = [
        s("BAD-6"),
        ua.Variant(1, ua.VariantType.UInt32),
        ua.Variant(9999, ua.VariantType.Int32),
        *(ua.Variant(0, ua.VariantType.Int32) for _ in range(3)),
        ua.Variant(False, ua.VariantType.Boolean),
        s(""),
        ua.Variant(0, ua.VariantType.Int32),
    ]
    result = await rig.call("SubmitOrder_AC-W", *typed)
    assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument
    assert result.InputArgumentResults[2].value == ua.StatusCodes.BadInvalidArgument
    typed[1] = ua.Variant(0, ua.VariantType.UInt32)
    typed[2] = ua.Variant(9000, ua.VariantType.Int32)
    result = await rig.call("SubmitOrder_AC-W", *typed)
    assert result.InputArgumentResults[1].value == ua.StatusCodes.BadInvalidArgument  # quantity 0

    result = await rig.call("CancelOrder", s("NOPE"))
    assert result.StatusCode.value == ua.StatusCodes.BadNotFound
    with pytest.raises(ua.UaStatusCodeError, match="BadNotFound"):
        await rig.line_node.call_method(f"{rig.ns}:CancelOrder", "NOPE")

    for name, plc in rig.line.plcs.items():  # nothing refused reached a PLC
        assert not plc.executed, name
        assert not any(await holding_but_heartbeat(plc, 130)), name
    assert await names(rig.node("Plant.Lines.ac_line.Orders")) == set()

    assert (await rig.call("SubmitOrder", s("DUP"), s("AC-W"), s("{}"))).StatusCode.is_good()
    again = await rig.call("SubmitOrder", s("DUP"), s("AC-W"), s("{}"))
    assert again.StatusCode.is_good()  # the same order again: idempotent
    other = await rig.call("SubmitOrder", s("DUP"), s("AC-W"), s('{"panel_color": "graphite"}'))
    assert other.StatusCode.value == ua.StatusCodes.BadInvalidArgument
    assert "exists with a different" in other.InputArgumentDiagnosticInfos[0].AdditionalInfo


async def test_no_event_is_built_while_subscriptions_watch_values_only(rig):
    """asyncua builds an event for every subscription and drops it where no item watches events:
    a SCADA client subscribed to values only would pay for every order's event."""
    generator = rig.face.stations.plant._events["order"][0]
    before = generator.event.EventId
    class Values:
        def datachange_notification(self, node, value, data) -> None:
            pass

    values = await rig.client.create_subscription(10, Values())
    await values.subscribe_data_change(rig.node("Plant.Lines.ac_line.Stations.coil.CurrentOrder"))
    await rig.bridge.submit("QUIET-1", "AC-W", {})
    await completed(rig, "QUIET-1")
    assert generator.event.EventId == before
    await values.delete()


async def test_order_events_from_the_line_and_the_server(rig):
    handler = Events()
    subscription = await rig.client.create_subscription(10, handler)
    event_type = rig.client.get_node(ua.NodeId("T.OrderStateChangedEventType", rig.types_ns))
    await subscription.subscribe_events(ua.ObjectIds.Server, event_type)
    on_line = Events()
    line_subscription = await rig.client.create_subscription(10, on_line)
    await line_subscription.subscribe_events(rig.line_node, event_type)
    await rig.line_node.call_method(f"{rig.ns}:SubmitOrder", "EV-1", "AC-W", "{}")
    done = await handler.until(
        lambda e: e.OrderId == "EV-1" and e.NewState == ORDER_STATES[OrderState.COMPLETED]
    )
    assert done.Severity == 300
    at_coil = await on_line.until(lambda e: e.OrderId == "EV-1" and e.Station == "coil")
    assert at_coil.NewState == ORDER_STATES[OrderState.RUNNING]
    stations = Events()
    station_subscription = await rig.client.create_subscription(10, stations)
    station_event = rig.client.get_node(ua.NodeId("T.StationStatusEventType", rig.types_ns))
    await station_subscription.subscribe_events(ua.ObjectIds.Server, station_event)
    await rig.line["coil"].set_fault("reject_next", 9)
    await rig.line_node.call_method(f"{rig.ns}:SubmitOrder", "EV-2", "AC-W", "{}")
    faulted = await handler.until(
        lambda e: e.OrderId == "EV-2" and e.NewState == ORDER_STATES[OrderState.FAULTED]
    )
    assert (faulted.Station, faulted.ResultCode, faulted.Severity) == ("coil", 9, 700)
    station_fault = await stations.until(lambda e: e.Station == "coil" and e.ResultCode == 9)
    assert station_fault.Severity == 700
    for sub in (subscription, line_subscription, station_subscription):
        await sub.delete()


async def test_station_offline_turns_values_bad_and_raises_an_event(rig):
    handler = Events()
    subscription = await rig.client.create_subscription(10, handler)
    station_event = rig.client.get_node(ua.NodeId("T.StationStatusEventType", rig.types_ns))
    await subscription.subscribe_events(ua.ObjectIds.Server, station_event)
    temperature = rig.node("Plant.Lines.ac_line.Stations.test_b.Telemetry.bench_air_temp_c")
    await until_good(temperature)
    good = await temperature.read_data_value()
    assert 26 <= good.Value.Value <= 28
    assert datetime.now(UTC) - good.SourceTimestamp < timedelta(seconds=5)

    await rig.line["test_b"].set_fault("exception_code", 4)
    offline = await handler.until(lambda e: e.Station == "test_b" and e.Connected is False)
    assert offline.Severity == 800
    assert await rig.node("Plant.Lines.ac_line.Stations.test_b.Connected").read_value() is False
    bad = await temperature.read_data_value(raise_on_bad_status=False)
    assert bad.StatusCode.value == ua.StatusCodes.BadCommunicationError
    assert await rig.node("Plant.Lines.ac_line.Stations.test_b.State").read_value() == 0  # offline

    await rig.line["test_b"].set_fault("exception_code", 0)
    await handler.until(lambda e: e.Station == "test_b" and e.Connected is True)
    await subscription.delete()


async def test_setpoints_are_written_to_the_plc_checked_and_read_back(rig):
    coil = rig.line["coil"]
    furnace = rig.node("Plant.Lines.ac_line.Stations.coil.Setpoints.furnace_setpoint_c")
    access = await furnace.read_attribute(ua.AttributeIds.AccessLevel)
    assert access.Value.Value & ua.AccessLevel.CurrentWrite.mask
    assert await until_good(furnace) == pytest.approx(605)
    eu_range = await (await furnace.get_child(["0:EURange"])).read_value()
    assert (eu_range.Low, eu_range.High) == (550, 650)

    await furnace.write_value(ua.Variant(630.5, ua.VariantType.Double))
    assert await coil.memory.read_field(coil.fields["furnace_setpoint_c"]) == pytest.approx(630.5)
    assert await furnace.read_value() == pytest.approx(630.5)

    assert await write(furnace, 700.0, ua.VariantType.Double) == ua.StatusCodes.BadOutOfRange
    assert await write(furnace, "hot", ua.VariantType.String) == ua.StatusCodes.BadTypeMismatch
    assert await coil.memory.read_field(coil.fields["furnace_setpoint_c"]) == pytest.approx(630.5)

    profile = rig.node("Plant.Lines.ac_line.Stations.test_a.Setpoints.test_profile")
    assert await write(profile, 1, ua.VariantType.Int32) == ua.StatusCodes.Good
    assert await rig.line["test_a"].memory.read("holding", 300, 1) == [1]
    assert await write(profile, 7, ua.VariantType.Int32) == ua.StatusCodes.BadOutOfRange
    printer = rig.node("Plant.Lines.ac_line.Stations.pack.Setpoints.label_printer_enabled")
    assert await write(printer, False, ua.VariantType.Boolean) == ua.StatusCodes.Good
    assert await rig.line["pack"].memory.read("coil", 10, 1) == [False]
    assert await write(printer, 0, ua.VariantType.Int32) == ua.StatusCodes.BadTypeMismatch

    # Nothing else is writable, even where asyncua would let an anonymous session write.
    state = rig.node("Plant.Lines.ac_line.Stations.coil.CurrentOrder")
    assert await write(state, "x", ua.VariantType.String) == ua.StatusCodes.BadUserAccessDenied
    missing = rig.node("Plant.Lines.ac_line.Stations.coil.Setpoints.nope")
    assert await write(missing, 1.0, ua.VariantType.Double) == ua.StatusCodes.BadNodeIdUnknown
    writes = [r[4] for r in rig.bridge.journal.load_audit() if r[1] == "write"]
    assert writes == [
        f"refused (BadUserAccessDenied) ns={rig.ns};s=Plant.Lines.ac_line.Stations.coil.CurrentOrder Value",
        f"refused (BadNodeIdUnknown) ns={rig.ns};s=Plant.Lines.ac_line.Stations.coil.Setpoints.nope Value",
    ]
    outcomes = [r[4] for r in rig.bridge.journal.load_audit() if r[1] == "setpoint_write"]
    assert "ok coil.furnace_setpoint_c=630.5" in outcomes
    assert any(
        o.startswith("refused coil.furnace_setpoint_c: setpoint furnace_setpoint_c: 700") for o in outcomes
    )


async def test_setpoint_the_plc_alters_is_refused_with_an_event(rig):
    stations = Events()
    subscription = await rig.client.create_subscription(10, stations)
    station_event = rig.client.get_node(ua.NodeId("T.StationStatusEventType", rig.types_ns))
    await subscription.subscribe_events(rig.line_node, station_event)
    chassis = rig.line["chassis"]
    await chassis.set_fault("clamp_setpoints", 1)
    force = rig.node("Plant.Lines.ac_line.Stations.chassis.Setpoints.force_limit_kn")
    assert await until_good(force) == pytest.approx(250)
    assert await write(force, 300.0, ua.VariantType.Double) == ua.StatusCodes.BadDeviceFailure
    event = await stations.until(lambda e: e.Station == "chassis" and e.ResultCode == 65533)
    assert event.Severity == 800
    assert "force_limit_kn" in event.Message.Text
    await subscription.delete()


async def test_reload_mapping_takes_new_derivations_or_says_why_not(ac_mapping, tmp_path):
    mapping_file = tmp_path / "line.yaml"
    mapping_file.write_text(AC_LINE.read_text())
    async with opcua_rig(ac_mapping, tmp_path / "data", mapping_file=mapping_file) as rig:
        events = Events()
        subscription = await rig.client.create_subscription(10, events)
        await subscription.subscribe_events(rig.line_node, ua.ObjectIds.BaseEventType)
        mapping_file.write_text(
            AC_LINE.read_text().replace("tolerance_g: {constant: 10}", "tolerance_g: {constant: 12}")
        )
        result = await rig.call("ReloadMapping")
        assert result.StatusCode.is_good()
        assert result.OutputArguments[0].Value == ["products.AC-W.parameters.charging.tolerance_g.constant"]
        await events.until(lambda e: "mapping reloaded: 1 change(s)" in e.Message.Text)
        await rig.line_node.call_method(f"{rig.ns}:SubmitOrder", "RL-1", "AC-W", "{}")
        await asyncio.wait_for(rig.bridge.wait_idle(), 10)
        (charge,) = [s for s in rig.bridge.get("RL-1").steps if s.station == "charge"]
        assert charge.parameters["tolerance_g"] == 12

        mapping_file.write_text(AC_LINE.read_text().replace("cycle_time_s: 25", "cycle_time_s: 26"))
        result = await rig.call("ReloadMapping")
        assert result.StatusCode.value == ua.StatusCodes.BadInvalidState
        report = result.OutputArguments[0].Value
        assert report[0].startswith("station_types.charging.cycle_time_s: differs from the running mapping")
        assert len(report) == 1  # the derivation changed back too, but that alone could be taken
        await events.until(lambda e: "mapping reload refused: 1 issue(s)" in e.Message.Text)
        assert rig.bridge.mapping.products["AC-W"].parameters["charging"]["tolerance_g"].constant == 12
        mapping_file.write_text("{not yaml")
        result = await rig.call("ReloadMapping")
        assert result.StatusCode.value == ua.StatusCodes.BadConfigurationError
        outcomes = [r[4] for r in rig.bridge.journal.load_audit() if r[1] == "mapping_reload"]
        assert outcomes[0] == "ok: products.AC-W.parameters.charging.tolerance_g.constant"
        assert [o.split(":")[0] for o in outcomes] == ["ok", "refused", "refused"]
        await subscription.delete()


async def test_telemetry_history(rig):
    node = rig.node("Plant.Lines.ac_line.Stations.chassis.Telemetry.press_force_kn")
    start = datetime.now(UTC) - timedelta(seconds=5)
    async with asyncio.timeout(10):
        while True:
            history = await node.read_raw_history(start, datetime.now(UTC) + timedelta(seconds=1))
            good = [h for h in history if h.StatusCode.is_good()]
            if len(good) >= 3:
                break
            await asyncio.sleep(0.05)
    assert all(174 <= h.Value.Value <= 186 for h in good)
    assert len({h.SourceTimestamp for h in good}) == len(good)  # one entry per PLC read


async def test_finished_orders_leave_the_address_space_after_the_retention(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data", order_retention_s=0.2) as rig:
        await rig.line_node.call_method(f"{rig.ns}:SubmitOrder", "GONE", "AC-W", "{}")
        orders = rig.node("Plant.Lines.ac_line.Orders")
        async with asyncio.timeout(10):
            while rig.bridge.get("GONE").state != OrderState.COMPLETED:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.01)
            while await names(orders):  # noqa: ASYNC110 - polls the address space, bounded
                await asyncio.sleep(0.05)
        assert rig.bridge.get("GONE").state == OrderState.COMPLETED  # still in the journal


async def test_nodeset_export_reimports_into_a_fresh_server(ac_mapping, tmp_path):
    path = tmp_path / "linebridge.xml"
    await export_nodeset(ac_mapping, path)
    server = Server()
    await server.init()
    await server.import_xml(str(path))
    ns = await server.get_namespace_index("urn:linebridge:types")
    for name in (
        "LineType",
        "StationType",
        "RunTestStationType",
        "OrderType",
        "ACWOrderType",
        "OrderStateEnum",
        "StationStateEnum",
        "OrderStateChangedEventType",
    ):
        node = server.get_node(ua.NodeId(f"T.{name}", ns))
        assert (await node.read_browse_name()).Name == name
    bench = server.get_node(ua.NodeId("T.RunTestStationType.Telemetry.bench_air_temp_c", ns))
    assert (await bench.read_type_definition()) == ua.NodeId(ua.ObjectIds.AnalogItemType)
    enum = server.get_node(ua.NodeId("T.OrderStateEnum", ns))
    definition = await enum.read_data_type_definition()
    assert [f.Name for f in definition.Fields] == [s.value for s in OrderState]


async def shape(node, depth: int = 0) -> dict:
    """Everything about a subtree but its values and ids: names, classes, types, reference types,
    data types, access, both directions of each reference."""
    a = ua.AttributeIds
    attrs = [a.NodeClass, a.BrowseName, a.DataType, a.ValueRank, a.AccessLevel, a.EventNotifier]
    values = await node.read_attributes(attrs)
    own = [dv.Value.Value if dv.StatusCode.is_good() else dv.StatusCode.name for dv in values]
    refs = await node.get_references(refs=ua.ObjectIds.References, direction=ua.BrowseDirection.Both)
    hierarchy = sorted(
        (str(r.ReferenceTypeId), r.IsForward, r.BrowseName.Name, r.NodeClass.name, str(r.TypeDefinition))
        for r in refs
        if r.IsForward
    )
    inverse = sorted((str(r.ReferenceTypeId), r.NodeClass.name) for r in refs if not r.IsForward)
    children = {}
    if depth < 3:
        for ref in await node.get_children_descriptions():
            children[ref.BrowseName.Name] = await shape(node.new_node(node.session, ref.NodeId), depth + 1)
    return {"attributes": own[:1] + own[2:], "refs": hierarchy, "inverse": inverse, "children": children}


async def test_orders_and_steps_copied_from_a_template_are_what_asyncua_instantiates(rig):
    """The second order and step of a type are copies of the first (bridge/opcua/instances.py):
    browsed from a client, nothing tells them apart."""
    for order_id in ("COPY-1", "COPY-2"):
        result = await rig.call("SubmitOrder", s(order_id), s("AC-W"), s("{}"))
        assert result.StatusCode.is_good(), result
    async with asyncio.timeout(30):
        await rig.bridge.wait_idle()
    orders = await rig.line_node.get_child([f"{rig.types_ns}:Orders"])
    first = await orders.get_child([f"{rig.ns}:COPY-1"])
    second = await orders.get_child([f"{rig.ns}:COPY-2"])
    first_shape, second_shape = [  # either tester will do: one name for both
        json.loads(json.dumps(await shape(order), default=str).replace("test_b", "test_a"))
        for order in (first, second)
    ]
    assert first_shape == second_shape
    assert len(first_shape["children"]["Steps"]["children"]) == 7  # every step, each compared above
    assert await second.read_browse_name() == ua.QualifiedName("COPY-2", rig.ns)
    assert (await second.read_display_name()).Text == "COPY-2"
    state = await second.get_child([f"{rig.types_ns}:State"])
    assert state.nodeid == ua.NodeId("Plant.Lines.ac_line.Orders.COPY-2.State", rig.ns)
    assert await state.read_value() == ORDER_STATES[OrderState.COMPLETED]
    assert (await state.get_parent()).nodeid == second.nodeid


async def test_an_order_waiting_on_an_absent_station_shows_why(rig):
    """Here the step at chassis has begun when the station goes (the bridge saw it before): the
    order says it waits for that PLC (tests/integration/test_engine.py: one waiting to begin)."""
    chassis = rig.line["chassis"]
    await chassis.set_fault("exception_code", 4)  # the first station answers nothing but failures
    events = Events()
    subscription = await rig.client.create_subscription(20, events)
    event_type = rig.client.get_node(ua.NodeId("T.OrderStateChangedEventType", rig.types_ns))
    await subscription.subscribe_events(rig.line_node, event_type)
    result = await rig.call("SubmitOrder", s("AWAY-1"), s("AC-W"), s("{}"))
    assert result.StatusCode.is_good(), result
    waiting = rig.node("Plant.Lines.ac_line.Orders.AWAY-1.WaitingFor")
    async with asyncio.timeout(10):
        while "station chassis" not in (await waiting.read_value()):  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.05)
    event = await events.until(lambda e: "at station chassis: not answering since" in e.Message.Text)
    assert event.OrderId == "AWAY-1"
    await chassis.set_fault("exception_code", 0)
    async with asyncio.timeout(10):
        while await waiting.read_value():  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.05)
    await subscription.delete()


async def test_a_step_handled_after_it_closed_still_shows_its_parameters(rig):
    """The face handles each step event with the phase the step had then: a begin it gets to only
    after the step closed (the face was busy) still writes the station's Parameters."""
    steps = rig.bridge.events.subscribe("test", StepChanged)
    closed = []
    async with rig.face.orders.lock:  # the face busy: the step events wait behind it
        await rig.bridge.submit("LATE-1", "AC-W", {"capacity_btu": 18000})
        async with asyncio.timeout(20):
            while not any(step.station == "charge" for step in closed):
                event = await steps.get()
                if event.phase == StepPhase.CLOSED:
                    closed.append(event.step)
    steps.close()
    (charge,) = [step for step in closed if step.station == "charge"]
    node = rig.node("Plant.Lines.ac_line.Stations.charge.Parameters.charge_g")

    async def shown() -> object:
        return (await node.read_data_value(raise_on_bad_status=False)).Value.Value

    async with asyncio.timeout(10):
        while await shown() != charge.parameters["charge_g"]:  # noqa: ASYNC110 - polls the server, bounded
            await asyncio.sleep(0.02)


async def test_the_faces_queues_are_bounded_as_the_engine_bounds_its_watchers(rig):
    followers = {f.name: f for f in (rig.face._order_events, rig.face._scans)}
    assert followers["opcua-orders"].subscription.maxsize == rig.bridge.engine.settings.watcher_queue
    assert followers["opcua-stations"].subscription.maxsize == SCAN_QUEUE


async def completed(rig, order_id: str) -> None:
    async with asyncio.timeout(20):
        while (order := rig.bridge.get(order_id)) is None or order.state != OrderState.COMPLETED:  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.02)


async def test_a_stations_step_nodes_show_its_latest_step_written_at_most_every_step_view(rig):
    """At full speed a station ends a step every few milliseconds: its step nodes are written at
    most every STEP_VIEW_S, and once the line is idle they show its last step, with that step's
    timestamps (the orders' own nodes keep every step)."""
    station = "Plant.Lines.ac_line.Stations.chassis"
    writes: list[object] = []

    async def written(handle, value) -> None:
        writes.append(value.Value.Value)

    current = ua.NodeId(f"{station}.CurrentOrder", rig.ns)
    rig.face.values.aspace.add_datachange_callback(current, ua.AttributeIds.Value, written)
    ids = [f"FAST-{i}" for i in range(20)]
    for order_id in ids:
        await rig.bridge.submit(order_id, "AC-W", {"capacity_btu": 9000})
    for order_id in ids:
        await completed(rig, order_id)
    (last,) = [s for s in rig.bridge.journal.load_order(ids[-1]).steps if s.station == "chassis"]
    results = rig.node(f"{station}.Results.strokes")
    async with asyncio.timeout(5):
        while (await results.read_data_value(raise_on_bad_status=False)).SourceTimestamp != last.finished_at:  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(0.02)
    assert (await results.read_value()) == last.results["strokes"]
    assert await rig.node(f"{station}.CurrentOrder").read_value() == ""
    assert writes[-1] == ""
    assert len(writes) < 2 * len(ids), f"each step's begin and end written one by one: {len(writes)}"
    for path in ("CurrentOrder", "Results.strokes", "Parameters.chassis_size"):  # told to clients
        minimum = await rig.node(f"{station}.{path}").read_attribute(ua.AttributeIds.MinimumSamplingInterval)
        assert minimum.Value.Value == 50.0


async def test_the_last_steps_values_return_with_the_station_and_survive_a_restart(ac_mapping, tmp_path):
    """A station's Parameters and Results are the bridge's record of its last step: withheld
    (BadCommunicationError) while the PLC does not answer, good again when it does, and taken from
    the journal when the bridge starts again."""
    data = tmp_path / "data"
    parameters = "Plant.Lines.ac_line.Stations.chassis.Parameters.chassis_size"
    results = "Plant.Lines.ac_line.Stations.chassis.Results.strokes"
    async with opcua_rig(ac_mapping, data) as rig:
        await rig.bridge.submit("LAST-1", "AC-W", {"capacity_btu": 24000})
        await completed(rig, "LAST-1")
        (step,) = [s for s in rig.bridge.journal.load_order("LAST-1").steps if s.station == "chassis"]
        await until_good(rig.node(results))  # step nodes are written a moment after (STEP_VIEW_S)
        shown = await rig.node(results).read_data_value()
        assert (shown.Value.Value, shown.SourceTimestamp) == (step.results["strokes"], step.finished_at)
        assert await rig.node(parameters).read_value() == 3  # chassis_size of 24000 BTU/h

        await rig.line["chassis"].set_fault("exception_code", 4)
        async with asyncio.timeout(10):
            while (await rig.node(results).read_data_value(raise_on_bad_status=False)).StatusCode.is_good():  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.02)
        withheld = await rig.node(results).read_data_value(raise_on_bad_status=False)
        assert withheld.StatusCode.value == ua.StatusCodes.BadCommunicationError
        await rig.line["chassis"].set_fault("exception_code", 0)
        assert await until_good(rig.node(results), timeout_s=10) == step.results["strokes"]
        assert await until_good(rig.node(parameters)) == 3

    async with opcua_rig(ac_mapping, data) as rig:  # the same journal, a new bridge and server
        again = await rig.node(results).read_data_value()
        assert (again.Value.Value, again.SourceTimestamp) == (step.results["strokes"], step.finished_at)
        assert (await rig.node(parameters).read_data_value()).SourceTimestamp == step.started_at
        assert await rig.node(parameters).read_value() == 3
