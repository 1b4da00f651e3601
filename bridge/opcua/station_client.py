"""The shell's view of stations over OPC UA: the list, one station's values with unit, precision,
quality and age, and the units of results (`linebridge station list|show`, `order show`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import Node, ua

from bridge.opcua.client import ClientError, Line
from bridge.opcua.uatypes import STATION_STATES

STATION_LISTED = (
    "State", "Connected", "CurrentOrder", "CycleCount", "Diagnostics.Errors", "Diagnostics.LastError",
)  # fmt: skip


async def list_stations(line: Line) -> list[dict[str, Any]]:
    """Every station of the line in mapping order, with what `station list` prints: one Browse and
    one Read for all of them."""
    refs = await line.child("Stations").get_children_descriptions()
    names = [ref.BrowseName.Name for ref in refs]
    nodes = [line.child(f"Stations.{name}.{var}") for name in names for var in STATION_LISTED]
    values = await line.client.read_values(nodes) if nodes else []
    width = len(STATION_LISTED)
    stations = []
    for i, name in enumerate(names):
        row = dict(zip(STATION_LISTED, values[i * width : (i + 1) * width], strict=True))
        row["State"] = STATION_STATES[row["State"]]
        stations.append({"station": name, **row})
    return stations


@dataclass(frozen=True)
class Reading:
    """One variable of a station as a client sees it: value, unit, quality and age."""

    name: str
    value: Any
    unit: str
    quality: str  # good, uncertain, bad (the OPC UA status code's severity), with the code's name
    age_s: float | None  # seconds since it last changed (its source timestamp), None if it has none
    precision: int | None = None  # digits after the point (the AnalogItem's ValuePrecision)


async def _enum_names(line: Line, node: Node, cache: dict[ua.NodeId, dict[int, str]]) -> dict[int, str]:
    """The names of an enumeration variable's codes (its data type's EnumValues), {} for a number."""
    data_type = await node.read_data_type()
    if data_type not in cache:
        cache[data_type] = {}
        if data_type.NamespaceIndex != 0:  # the model's own enumerations; built-in numbers have none
            try:
                values = await line.client.get_node(data_type).get_child(["0:EnumValues"])
                cache[data_type] = {v.Value: v.DisplayName.Text for v in await values.read_value()}
            except ua.UaStatusCodeError:
                pass
    return cache[data_type]


def _quality(code: ua.StatusCode) -> str:
    if code.value == ua.StatusCodes.BadWaitingForInitialData:
        return "no value yet"
    if code.is_good():
        return "good"
    severity = "uncertain" if code.is_uncertain() else "bad"
    return f"{severity} ({code.name})"


async def show_station(line: Line, station: str) -> dict[str, Any]:
    """A station's state, counters and every Telemetry, Setpoints, Parameters and Results variable
    with its unit (the AnalogItem's EngineeringUnits), quality and age."""
    base = line.child(f"Stations.{station}")
    try:
        await base.read_browse_name()
    except ua.UaStatusCodeError:
        raise ClientError(f"no station {station!r} on line {line.path.rsplit('.', 1)[-1]}") from None
    info: dict[str, Any] = {"station": station}
    names = ("State", "Connected", "CurrentOrder", "CycleCount", "LastCycleTime")
    values = await line.client.read_values([line.child(f"Stations.{station}.{n}") for n in names])
    info.update(zip(names, values, strict=True))
    info["State"] = STATION_STATES[info["State"]]
    now = datetime.now(UTC)
    enum_names: dict[ua.NodeId, dict[int, str]] = {}  # per enumeration data type: code → name
    for folder in ("Telemetry", "Setpoints", "Parameters", "Results", "Diagnostics"):
        readings = []
        try:
            children = await line.child(f"Stations.{station}.{folder}").get_children()
        except ua.UaStatusCodeError:
            children = []
        for node in children:
            name = (await node.read_browse_name()).Name
            data = await node.read_data_value(raise_on_bad_status=False)
            unit, precision = await engineering_unit(node)
            stamp = data.SourceTimestamp
            age = (now - stamp.replace(tzinfo=UTC)).total_seconds() if stamp else None
            value = data.Value.Value if data.Value is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and folder != "Diagnostics":
                value = (await _enum_names(line, node, enum_names)).get(value, value)
            readings.append(Reading(name, value, unit, _quality(data.StatusCode), age, precision))
        info[folder] = readings
    return info


async def result_units(line: Line, stations: set[str]) -> dict[tuple[str, str], tuple[str, int | None]]:
    """(station, result) → the engineering unit and precision its Results variable carries (AnalogItem)."""
    units: dict[tuple[str, str], tuple[str, int | None]] = {}
    for station in sorted(stations):
        try:
            results = await line.child(f"Stations.{station}.Results").get_children()
        except ua.UaStatusCodeError:
            continue
        for node in results:
            units[(station, (await node.read_browse_name()).Name)] = await engineering_unit(node)
    return units


async def engineering_unit(node: Node) -> tuple[str, int | None]:
    """The unit of an AnalogItem variable (its EngineeringUnits property; "" for one without) and
    the digits after the point to show it with (its ValuePrecision; None for one without)."""
    unit, precision = "", None
    for ref in await node.get_references(ua.ObjectIds.HasProperty, ua.BrowseDirection.Forward):
        if ref.BrowseName.Name == "EngineeringUnits":
            unit = (await node.new_node(node.session, ref.NodeId).read_value()).DisplayName.Text or ""
        elif ref.BrowseName.Name == "ValuePrecision":
            precision = int(await node.new_node(node.session, ref.NodeId).read_value())
    return unit, precision
