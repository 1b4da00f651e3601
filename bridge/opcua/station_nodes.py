"""Stations in the address space: state, diagnostics, telemetry and setpoints from each scan event
(parameters and results from each step event: step_nodes.py). The scan path is the hot path
(docs/telemetry.md): everything per field is settled once (`Polled`), only what changed is
compared, and a scan's values are written at once."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import ua

from bridge.counters import BUSY_COUNTS, LinkCounters
from bridge.domain.events import StationScanned
from bridge.domain.model import utcnow
from bridge.handshake import ResultCode, station_state
from bridge.mapping.fields import deadband_of, history_of
from bridge.mapping.model import LineMapping
from bridge.opcua import names
from bridge.opcua.history_store import HistoryStore, Row
from bridge.opcua.notify import value_attribute
from bridge.opcua.plant import PlantModel
from bridge.opcua.setpoints import Setpoint
from bridge.opcua.step_nodes import StepNodes
from bridge.opcua.uatypes import DIAGNOSTICS, ModelTypes, diagnostic_name, field_variant
from bridge.opcua.values import Polled, Staged, ValueWriter
from bridge.service import Bridge

log = structlog.get_logger(__name__)

_FLOATS = (ua.VariantType.Float, ua.VariantType.Double)
# Counters that move on every poll are published at most this often (the others as they change).
BUSY_COUNTERS_EVERY_S = 1.0
_MISSING = object()


class StationNodes:
    def __init__(self, bridge: Bridge, types: ModelTypes, values: ValueWriter, plant: PlantModel) -> None:
        self.bridge, self.types, self.values, self.plant = bridge, types, values, plant
        self.mapping: LineMapping = bridge.mapping
        self.paths = plant.paths
        self._dropped_path = self.paths.on_line(names.HISTORY_ROWS_DROPPED)
        # Settled once: polls and steps look fields up many times a second.
        self._fields = {station: self.mapping.resolved_fields(station) for station in self.mapping.stations}
        self._enums = {
            (station, name): types.field_enums.get((st.type, name))
            for station, st in self.mapping.stations.items()
            for name in self._fields[station]
        }
        self._online: dict[str, bool | None] = dict.fromkeys(self.mapping.stations)
        self._error: dict[str, str | None] = {}
        self._counted_at: dict[str, float] = {}  # station → when its busy counters are next published
        self._quiet_counts: dict[str, tuple[Any, ...]] = {}  # station → its other counters, as last staged
        self._seen: dict[str, tuple[Any, ...]] = {}  # station → what State/Connected/CycleCount came from
        self._own = {name: _OwnNodes.of(self.paths.station(name)) for name in self.mapping.stations}
        self.steps = StepNodes(self.mapping, values, plant, self.write_value, self._online.get)
        # station → the last scan this face handled (what is unchanged since is skipped)
        self._last: dict[str, StationScanned] = {}
        self._polled: dict[str, tuple[dict[str, Polled], dict[str, Polled]]] = {}
        self.history: HistoryStore | None = None

    # -- set-up -----------------------------------------------------------------------------

    def historized(self, default_retention_s: float) -> dict[str, float]:
        """Telemetry node path → retention (s) of every field whose history is on."""
        found = {}
        for name, station in self.mapping.stations.items():
            for field_name in self.mapping.station_types[station.type].telemetry:
                spec = history_of(self._fields[name][field_name])
                if spec.enabled:
                    path = self.paths.station_value(name, "Telemetry", field_name)
                    found[path] = spec.retention_s or default_retention_s
        return found

    async def start(self, history: HistoryStore, historized: Collection[str]) -> None:
        """Plan every polled field, mark every value as waiting for its first read."""
        self.history = history
        keys = {path: history.key_of(self.values.nid(path).to_string()) for path in historized}
        self._polled = {station: self._poll_plan(station, keys) for station in self.mapping.stations}
        readable = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
        for path in historized:
            node = self.values.server.get_node(self.values.nid(path))
            await node.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(ua.Variant(True)))
            await node.write_attribute(
                ua.AttributeIds.AccessLevel, ua.DataValue(ua.Variant(readable, ua.VariantType.Byte))
            )
        for station in self.mapping.stations:
            await self._mark(station, ua.StatusCodes.BadWaitingForInitialData)
        await self.steps.start()

    def _poll_plan(self, station: str, keys: dict[str, int]) -> tuple[dict[str, Polled], dict[str, Polled]]:
        """Per polled field, settled once (the scan path looks nothing up per value)."""
        kind = self.mapping.station_type(station)
        plans = []
        for folder, field_names in (("Telemetry", kind.telemetry), ("Setpoints", kind.setpoints)):
            plan = {}
            for field_name in field_names:
                f = self._fields[station][field_name]
                path = self.paths.station_value(station, folder, field_name)
                enum = self._enums[(station, field_name)]
                vtype = field_variant(f)
                codes = self.types.enum_codes[enum] if enum is not None else None
                nid = self.values.nid(path)
                attval = value_attribute(self.values.aspace, nid)
                plan[field_name] = Polled(
                    field_name, f, path, nid, attval, vtype, vtype.value, vtype in _FLOATS, codes,
                    deadband_of(f), keys.get(path),
                )  # fmt: skip
            plans.append(plan)
        return plans[0], plans[1]

    # -- values -----------------------------------------------------------------------------

    async def write_value(
        self, station: str, folder: str, name: str, value: Any, at: datetime | None, **kw: Any
    ) -> tuple[Any, ua.VariantType, int] | None:
        """One of the station's PLC values (values.ValueWriter.write_field), by its folder and name."""
        path = self.paths.station_value(station, folder, name)
        f, enum = self._fields[station][name], self._enums[(station, name)]
        return await self.values.write_field(path, f, enum, value, at, **kw)

    def setpoints(self) -> dict[ua.NodeId, Setpoint]:
        """Every setpoint node and what it writes to."""
        found: dict[ua.NodeId, Setpoint] = {}
        for station, st in self.mapping.stations.items():
            for name in self.mapping.station_types[st.type].setpoints:
                enum = self._enums[(station, name)]
                codes = self.types.enum_codes[enum] if enum is not None else None
                path = self.paths.station_value(station, "Setpoints", name)
                found[self.values.nid(path)] = Setpoint(station, name, self._fields[station][name], codes)
        return found

    async def show_setpoint(self, setpoint: Setpoint, value: Any) -> None:
        await self.write_value(setpoint.station, "Setpoints", setpoint.name, value, utcnow())

    async def setpoint_mismatch(self, setpoint: Setpoint, reason: str) -> None:
        await self.plant.fire(
            "station",
            f"station {setpoint.station}: setpoint {setpoint.name} read back differs from what was written",
            800, Station=setpoint.station, Connected=True, ResultCode=int(ResultCode.READBACK_MISMATCH),
        )  # fmt: skip
        log.error("setpoint_mismatch", station=setpoint.station, setpoint=setpoint.name, reason=reason)

    async def on_scan(self, scan: StationScanned) -> None:
        name, online = scan.station, scan.online
        read_at = datetime.fromtimestamp(scan.read_at, UTC) if scan.read_at else utcnow()
        held = self.bridge.held(name, scan.status_invalid)
        staged: Staged = []  # written at once below (notify.write_values)
        seen = (online, held, scan.status, scan.status_read_at)
        state_changed = seen != self._seen.get(name)  # most polls: the status block was not read again
        self._stage_state(scan, held, read_at, staged, state_changed)
        if state_changed:
            self._seen[name] = seen
            await self._announce_error(name, held)
        rows: list[Row] = []
        at_s, now = read_at.timestamp(), utcnow()
        last = self._last.get(name)
        self._last[name] = scan
        same = last is not None and last.online == online
        telemetry_plan, setpoint_plan = self._polled[name]
        for values, plan, before, known in (
            (scan.telemetry, telemetry_plan, last.telemetry if same else None,
             scan.changed if same and scan.before is last.telemetry else None),
            (scan.setpoints, setpoint_plan, last.setpoints if same else None, None),
        ):  # fmt: skip
            doubts_before = last.doubts if last is not None else {}
            for entry in changed_fields(plan, values, scan.doubts, before, doubts_before, known):
                value = values.get(entry.name)
                doubt = scan.doubts.get(entry.name)
                if online and doubt is None and value is not None:  # the common case, inline
                    self.values.stage_good(entry, value, read_at, now, staged, rows, at_s)
                    continue
                written = await self.values.write_field(
                    entry.path, entry.field, self._enums[(name, entry.name)], value, read_at, good=online,
                    doubt=doubt, by_exception=entry.deadband, staged=staged,
                )  # fmt: skip
                if written is not None and entry.history_key is not None:
                    value, vtype, code = written
                    stored = None if code & 0x80000000 else value
                    rows.append((entry.history_key, at_s, stored, vtype.value, code))
        if rows and self.history is not None:
            self.history.add(rows)
            dropped, uint64 = self.history.dropped_rows, ua.VariantType.UInt64
            self.values.stage_changed(staged, self._dropped_path, dropped, uint64)
        await self.values.flush(staged)
        await self._came_or_went(name, online)

    def _stage_state(
        self, scan: StationScanned, held: str | None, read_at: datetime, staged: Staged, state_changed: bool
    ) -> None:
        """State, Connected, CycleCount (when `state_changed`) and the diagnostics counters, each only
        when it changed."""
        name, online, status = scan.station, scan.online, scan.status
        nodes, stage = self._own[name], self.values.stage_changed
        if state_changed:
            state = station_state(online, held is not None, status)
            state_code = self.types.enum_codes[self.types.station_state][state]
            # the status block may be older than this poll's telemetry (handshake.idle_status_interval_s)
            at = datetime.fromtimestamp(scan.status_read_at, UTC) if scan.status_read_at else read_at
            stage(staged, nodes.state, state_code, ua.VariantType.Int32, at)
            stage(staged, nodes.connected, online, ua.VariantType.Boolean)
            if status is not None:
                stage(
                    staged, nodes.cycle_count, status.executed_count, ua.VariantType.UInt32, at, good=online
                )
        counters = scan.counters
        quiet = nodes.read_quiet(counters)
        if quiet != self._quiet_counts.get(name):  # most polls: nothing went wrong, nothing to compare
            self._quiet_counts[name] = quiet
            for (diag_path, vtype), value in zip(nodes.quiet, quiet, strict=True):
                stage(staged, diag_path, value, vtype)
        tick = time.monotonic()
        if tick >= self._counted_at.get(name, 0.0):
            self._counted_at[name] = tick + BUSY_COUNTERS_EVERY_S
            for attribute, diag_path in nodes.busy:
                stage(staged, diag_path, getattr(counters, attribute), ua.VariantType.UInt64)

    async def _came_or_went(self, name: str, online: bool) -> None:
        if online == self._online[name]:
            return
        was, self._online[name] = self._online[name], online
        if was is not None or not online:
            await self.plant.fire(
                "station", f"station {name} {'online' if online else 'offline'}", 200 if online else 800,
                Station=name, Connected=online, ResultCode=0,
            )  # fmt: skip
        if not online:
            await self._mark(name, ua.StatusCodes.BadCommunicationError, live_only=True)
        elif was is False:
            await self.steps.show_again(name)

    async def _announce_error(self, station: str, reason: str | None) -> None:
        """A station event when a station is held for a handshake it cannot trust, and when that ends."""
        if reason == self._error.get(station):
            return
        self._error[station] = reason
        message = f"station {station}: {reason}" if reason else f"station {station}: error cleared"
        await self.plant.fire(
            "station", message, 900 if reason else 300, Station=station, Connected=True,
            ResultCode=int(ResultCode.HANDSHAKE_VIOLATION) if reason else 0,
        )  # fmt: skip

    async def _mark(self, station: str, code: int, *, live_only: bool = False) -> None:
        """BadWaitingForInitialData before the first read, BadCommunicationError while the PLC is away."""
        kind = self.mapping.station_type(station)
        value = self.paths.station_value
        paths = self.steps.record_paths(station)
        if not live_only:
            paths += [value(station, "Telemetry", n) for n in kind.telemetry]
            paths += [f"{self.paths.station(station)}.CycleCount"]
            paths += [value(station, "Setpoints", n) for n in kind.setpoints]
        self._last.pop(station, None)
        await self.values.mark(paths, code)


def changed_fields(
    plan: dict[str, Polled],
    values: dict[str, Any],
    doubts: dict[str, Any],
    before: dict[str, Any] | None,
    doubts_before: dict[str, Any],
    known: Collection[str] | None = None,
) -> list[Polled]:
    """The plan's fields whose value or doubt differs from the last poll (all of them after none,
    or when the station came or went). `known`: the names that can differ from `before` (the
    link's fields decoded anew since it), so the others need no comparing."""
    if before is None:
        return list(plan.values())
    if values is before and doubts is doubts_before:
        return []
    if known is None:
        names = dict.fromkeys(k for k, v in values.items() if v != before.get(k, _MISSING))
    else:
        names = dict.fromkeys(k for k in known if values[k] != before.get(k, _MISSING))
    if doubts or doubts_before:
        either = doubts.keys() | doubts_before.keys()
        names.update(dict.fromkeys(k for k in either if doubts.get(k) != doubts_before.get(k)))
    return [plan[name] for name in names if name in plan]


@dataclass(frozen=True, slots=True)
class _OwnNodes:
    """The paths of a station's own variables, made once: each poll stages them."""

    state: str
    connected: str
    cycle_count: str
    busy: tuple[tuple[str, str], ...]  # LinkCounters attribute, path: published once a second
    quiet: tuple[tuple[str, ua.VariantType], ...]  # path, type: published as they change
    read_quiet: Callable[[LinkCounters], tuple[Any, ...]]  # the quiet counters' values, in that order

    @classmethod
    def of(cls, path: str) -> _OwnNodes:
        diag = f"{path}.Diagnostics"
        quiet = [(name, vtype) for name, vtype in DIAGNOSTICS if name not in BUSY_COUNTS]
        return cls(
            f"{path}.State",
            f"{path}.Connected",
            f"{path}.CycleCount",
            tuple((name, f"{diag}.{diagnostic_name(name)}") for name in BUSY_COUNTS),
            tuple((f"{diag}.{diagnostic_name(name)}", vtype) for name, vtype in quiet),
            operator.attrgetter(*(name for name, _ in quiet)),
        )
