"""The bridge's OPC UA face: the plant's address space, kept in step with the engine and PLCs.

Objects/Plant/Lines/<line>/Stations/<station> and .../Orders/<order_id> (docs/opcua-model.md).
Station values carry the time they were read from the PLC as SourceTimestamp and turn
BadCommunicationError while the station does not answer (asyncua then withholds the value, as
OPC UA Part 4 requires with a Bad status; the SourceTimestamp of the last read stays).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import operator
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from asyncua import Node, Server, ua

from bridge.domain.model import Order, OrderEvent, OrderState, Step, StepPhase, utcnow
from bridge.errors import (
    ConfigurationError,
    DecisionRequired,
    MappingError,
    MappingIncompatible,
    OrderRejected,
)
from bridge.handshake import ResultCode, station_state
from bridge.lifecycle import cancel_and_wait
from bridge.limits import LOGGED_TEXT_CHARS, clip
from bridge.mapping import codec
from bridge.mapping.model import deadband_of, history_of
from bridge.modbus import LinkCounters, ModbusStationLink
from bridge.modbus.link import BUSY_COUNTS
from bridge.opcua import wire
from bridge.opcua.endpoint_security import SecuritySettings, audit_sessions, check_exposure, secure_server
from bridge.opcua.history_read import PagedHistory
from bridge.opcua.history_store import HistoryStore, Row
from bridge.opcua.instances import InstanceFactory
from bridge.opcua.methods import LineMethods
from bridge.opcua.notify import (
    Writes,
    data_value,
    scalar_variant,
    share_notified_values,
    value_attribute,
    write_values,
)
from bridge.opcua.session_limits import SessionLedger, SessionLimits
from bridge.opcua.setpoints import Setpoint, SetpointAccess
from bridge.opcua.uatypes import (
    APP_URI_PREFIX,
    DIAGNOSTICS,
    NO_TIME,
    ModelTypes,
    build_types,
    diagnostic_name,
    field_variant,
    option_variant,
)
from bridge.security.rules import current_channel, current_user
from bridge.service import Bridge
from bridge.supervise import start_supervised

log = structlog.get_logger(__name__)

DEFAULT_ENDPOINT = "opc.tcp://127.0.0.1:4840/"
_FLOATS = (ua.VariantType.Float, ua.VariantType.Double)
_NULLABLE = (ua.VariantType.String, ua.VariantType.ByteString)
_VALUE = ua.AttributeIds.Value
_NULL = ua.Variant()
Staged = Writes
_GOOD = ua.StatusCodes.Good
# Counters that move on every poll are published at most this often (the others as they change).
BUSY_COUNTERS_EVERY_S = 1.0
SEVERITY = {OrderState.FAULTED: 700, OrderState.CANCELLED: 400, OrderState.COMPLETED: 300}


@dataclass(frozen=True)
class OpcUaSettings:
    endpoint: str = DEFAULT_ENDPOINT
    order_retention_s: float = 3600.0
    history_retention_s: float = 7 * 24 * 3600.0
    history_file: Path | None = None  # None: DATA_DIR/history.sqlite
    server_name: str = "linebridge"
    security: SecuritySettings | None = None  # None: the None endpoint only, anonymous (local demo)
    allow_insecure_remote: bool = False  # serve the None endpoint on a non-loopback address
    limits: SessionLimits = field(default_factory=SessionLimits)  # what one client may claim


class OpcUaFace:
    def __init__(self, bridge: Bridge, settings: OpcUaSettings | None = None) -> None:
        self.bridge = bridge
        self.mapping = bridge.mapping
        # Settled once: polls and steps look fields up many times a second.
        self._fields = {station: self.mapping.resolved_fields(station) for station in self.mapping.stations}
        self.settings = settings or OpcUaSettings()
        self.server = Server()
        self._aspace = self.server.iserver.aspace
        self._instances = InstanceFactory(self.server)
        self.types: ModelTypes | None = None
        self.ns = 0
        self.line_node: Node | None = None
        self._orders_folder: Node | None = None
        self._order_nodes: dict[str, ua.NodeId] = {}
        self._finished_at: dict[str, datetime] = {}
        self._station_online: dict[str, bool | None] = dict.fromkeys(self.mapping.stations)
        self._station_error: dict[str, str | None] = {}
        # step events waiting for the face, bounded as the engine bounds its watchers' queues
        self._steps: asyncio.Queue[tuple[Order, Step, StepPhase]] = asyncio.Queue(
            bridge.engine.settings.watcher_queue
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()  # one writer of order nodes at a time
        self._events: dict[str, list[Any]] = {}
        self.endpoint = self.settings.endpoint
        self.history: HistoryStore | None = None
        self._history_keys: dict[str, int] = {}  # node path → the history store's key, if historized
        self._nids: dict[str, ua.NodeId] = {}
        self._counted_at: dict[str, float] = {}  # station → when its busy counters are next published
        self._quiet_counts: dict[str, tuple[Any, ...]] = {}  # station → its other counters, as last staged
        # station → what its State, Connected and CycleCount were last staged from
        self._station_seen: dict[str, tuple[Any, ...]] = {}
        self._station_nodes = {
            name: _StationNodes.of(f"{self.line_path}.Stations.{name}") for name in self.mapping.stations
        }
        self._dropped_path = f"{self.line_path}.HistoryRowsDropped"
        # station → telemetry, setpoints, doubts and online as last polled (what is unchanged is skipped)
        self._last_scan: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], bool]] = {}
        self._polled: dict[str, tuple[dict[str, Polled], dict[str, Polled]]] = {}
        self._published: dict[str, tuple[Any, int]] = {}  # node path → value and status last written

    @property
    def app_uri(self) -> str:
        """The server's application URI, also the namespace of the plant's instances."""
        return f"{APP_URI_PREFIX}{self.mapping.line.name}"

    @property
    def line_path(self) -> str:
        return f"Plant.Lines.{self.mapping.line.name}"

    def nid(self, path: str) -> ua.NodeId:
        nodeid = self._nids.get(path)
        if nodeid is None:  # kept: station values are written thousands of times a second
            nodeid = self._nids[path] = ua.NodeId(path, self.ns)
        return nodeid

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        server = self.server
        await server.init()
        server.set_endpoint(self.settings.endpoint)
        server.set_server_name(self.settings.server_name)
        await server.set_application_uri(self.app_uri)
        await self._secure()
        audit_sessions(self.server, self.audit)
        self.sessions = SessionLedger(self.server, self.settings.limits)
        self.sessions.install()
        share_notified_values(self.server)
        wire.install()
        self.types = await build_types(server, self.mapping)
        self.ns = await server.register_namespace(self.app_uri)
        await self._build_plant()
        self._setpoint_access = SetpointAccess(
            server, self._setpoints(), self.bridge.write_setpoint, self._show_setpoint, self._audit_caller,
            self._setpoint_mismatch,
        )  # fmt: skip
        history_file = self.settings.history_file or self.bridge.settings.data_dir / "history.sqlite"
        history_file.parent.mkdir(parents=True, exist_ok=True)
        historized = self._historized()
        retention = {self.nid(path).to_string(): keep_s for path, keep_s in historized.items()}
        self.history = HistoryStore(history_file, retention_s=retention)
        await self.history.init()
        self._history_keys = {path: self.history.key_of(self.nid(path).to_string()) for path in historized}
        self._polled = {station: self._poll_plan(station) for station in self.mapping.stations}
        server.iserver.history_manager = PagedHistory(server.iserver, self.history)
        starting = logging.getLogger("asyncua.server.server")
        level = starting.level
        starting.setLevel(logging.CRITICAL)  # a port in use is said below in one line, not a traceback
        try:
            await server.start()
        except OSError as exc:  # asyncua has stopped its internals already; ours too, then say why
            await self.history.stop()
            raise ConfigurationError(
                f"OPC UA endpoint {self.settings.endpoint}: cannot listen ({exc.strerror or exc})"
            ) from None
        finally:
            starting.setLevel(level)
        port = server.bserver.port if server.bserver is not None else None
        self.endpoint = self.settings.endpoint.replace(":0/", f":{port}/")
        await self._historize_telemetry()
        await self._init_events()
        for order in self._initial_orders():
            await self.show_order(order)
        self.bridge.engine.step_listeners.append(self._queue_step)
        for link in self.bridge.links.values():
            link.listeners.append(self._on_station_poll)
        start_supervised(self._tasks, "opcua-orders", self._follow_orders)
        start_supervised(self._tasks, "opcua-steps", self._follow_steps)
        start_supervised(self._tasks, "opcua-retention", self._sweep_finished)
        log.info("opcua_listening", endpoint=self.endpoint, namespace=self.app_uri)

    async def stop(self) -> None:
        # Detach first: nothing may write to the address space (and its history store) once the
        # server has begun to close, or a history write can wait forever on a closed database.
        if self._queue_step in self.bridge.engine.step_listeners:
            self.bridge.engine.step_listeners.remove(self._queue_step)
        for link in self.bridge.links.values():
            if self._on_station_poll in link.listeners:
                link.listeners.remove(self._on_station_poll)
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self.history is not None:
            await self.history.stop()
        # asyncua stops its clock task by a flag the task reads once a second: cancel it instead, so
        # SIGTERM ends the bridge well within a second.
        clock = self.server.iserver.time_task
        if clock is not None:
            await cancel_and_wait([clock])
            self.server.iserver.time_task = None
        try:
            async with asyncio.timeout(10):
                await self.server.stop()
        except TimeoutError:
            log.error("opcua_stop_timeout")

    def _queue_step(self, order: Order, step: Step) -> None:
        # with its phase as of now: the step object moves on (a begin handled after the step closed
        # must still show the step's parameters)
        if self._steps.full():  # the face has stalled that long: the oldest event goes, logged
            old_order, old_step, old_phase = self._steps.get_nowait()
            log.warning(
                "step_event_dropped", order_id=old_order.order_id, station=old_step.station, phase=old_phase
            )
        self._steps.put_nowait((order, step, step.phase))

    # -- building the plant -----------------------------------------------------------------

    async def _build_plant(self) -> None:
        assert self.types is not None
        ns, types = self.ns, self.types
        plant = await self.server.nodes.objects.add_folder(self.nid("Plant"), ua.QualifiedName("Plant", ns))
        lines = await plant.add_folder(self.nid("Plant.Lines"), ua.QualifiedName("Lines", ns))
        line = await lines.add_object(
            self.nid(self.line_path), ua.QualifiedName(self.mapping.line.name, ns), types.line_type
        )
        await line.write_attribute(
            ua.AttributeIds.Description,
            ua.DataValue(ua.Variant(ua.LocalizedText(self.mapping.line.description))),
        )
        self.line_node = line
        stations = self.server.get_node(self.nid(f"{self.line_path}.Stations"))
        for name, station in self.mapping.stations.items():
            await stations.add_object(
                self.nid(f"{self.line_path}.Stations.{name}"),
                ua.QualifiedName(name, ns),
                types.station_types[station.type],
            )
            await self._mark_station(name, ua.StatusCodes.BadWaitingForInitialData)
        self._orders_folder = self.server.get_node(self.nid(f"{self.line_path}.Orders"))
        methods = LineMethods(
            self.mapping, types, self._submit, self._cancel, self._node_of, self._rejected, self._reload,
            self._clear_station,
        )  # fmt: skip
        await methods.add_to(line, ns)
        await line.add_variable(
            self.nid(f"{self.line_path}.HistoryRowsDropped"),
            ua.QualifiedName("HistoryRowsDropped", ns),
            ua.Variant(0, ua.VariantType.UInt64),
        )  # telemetry history rows lost to a full queue (docs/telemetry.md)
        # Server → Plant → line: a client browsing notifiers from the Server object finds the line.
        server_node = self.server.nodes.server
        await server_node.add_reference(plant.nodeid, ua.ObjectIds.HasNotifier)
        await plant.add_reference(line.nodeid, ua.ObjectIds.HasNotifier)
        await plant.set_event_notifier([ua.EventNotifier.SubscribeToEvents])

    def _poll_plan(self, station: str) -> tuple[dict[str, Polled], dict[str, Polled]]:
        """Per polled field, settled once (the scan path looks nothing up per value)."""
        assert self.types is not None
        kind_name = self.mapping.stations[station].type
        kind = self.mapping.station_types[kind_name]
        path = f"{self.line_path}.Stations.{station}"
        plans = []
        for folder, names in (("Telemetry", kind.telemetry), ("Setpoints", kind.setpoints)):
            plan = {}
            for field_name in names:
                f = self._fields[station][field_name]
                node_path = f"{path}.{folder}.{field_name}"
                enum = self.types.field_enums.get((kind_name, field_name))
                vtype = field_variant(f)
                codes = self.types.enum_codes[enum] if enum is not None else None
                history_key = self._history_keys.get(node_path)
                nid = self.nid(node_path)
                attval = value_attribute(self._aspace, nid)
                entry = Polled(
                    field_name, f, node_path, nid, attval, vtype, vtype.value, vtype in _FLOATS, codes,
                    deadband_of(f), history_key,
                )  # fmt: skip
                plan[field_name] = entry
            plans.append(plan)
        return plans[0], plans[1]

    def _historized(self) -> dict[str, float]:
        """Telemetry node path → retention (s) of every field whose history is on."""
        found = {}
        for name, station in self.mapping.stations.items():
            for field_name in self.mapping.station_types[station.type].telemetry:
                spec = history_of(self._fields[name][field_name])
                if spec.enabled:
                    path = f"{self.line_path}.Stations.{name}.Telemetry.{field_name}"
                    found[path] = spec.retention_s or self.settings.history_retention_s
        return found

    async def _historize_telemetry(self) -> None:
        readable = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
        for path in self._historized():
            node = self.server.get_node(self.nid(path))
            await node.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(ua.Variant(True)))
            await node.write_attribute(
                ua.AttributeIds.AccessLevel, ua.DataValue(ua.Variant(readable, ua.VariantType.Byte))
            )

    async def _init_events(self) -> None:
        assert self.types is not None
        assert self.line_node is not None
        for key, etype in (
            ("order", self.types.order_event),
            ("station", self.types.station_event),
            ("notice", ua.NodeId(ua.ObjectIds.BaseEventType)),
        ):
            self._events[key] = [
                await self.server.get_event_generator(etype, self.line_node),
                await self.server.get_event_generator(etype, ua.ObjectIds.Server),
            ]

    async def _fire(self, key: str, message: str, severity: int, **fields: Any) -> None:
        for generator in self._events.get(key, []):
            event = generator.event
            for name, value in fields.items():
                setattr(event, name, value)
            event.Severity = severity
            event.SourceName = self.mapping.line.name
            await generator.trigger(message=message)

    # -- orders -----------------------------------------------------------------------------

    def _initial_orders(self) -> list[Order]:
        since = utcnow() - timedelta(seconds=self.settings.order_retention_s)
        finished = self.bridge.journal.load_finished_since(since)
        return finished + self.bridge.engine.active_orders()

    async def _secure(self) -> None:
        """Endpoints, certificates, users and roles as configured (docs/security.md)."""
        settings = self.settings
        offers_none = check_exposure(settings.endpoint, settings.security, settings.allow_insecure_remote)
        await secure_server(self.server, self.app_uri, settings.security, offers_none, self.audit)

    def audit(self, event: str, user: str, thumbprint: str, outcome: str) -> None:
        """One audit record (Bridge.audit), with the channel of the request being handled."""
        self.bridge.audit(event, user, thumbprint, outcome, str(current_channel.get() or ""))

    def _audit_caller(self, event: str, outcome: str) -> None:
        """An audit record of the request being handled, with its user and client certificate."""
        user = current_user.get()
        name = (user.name or "") if user is not None else "anonymous"
        self.audit(event, name, getattr(user, "thumbprint", ""), outcome)

    async def _submit(self, order_id: Any, product: Any, options: Any, quantity: Any, priority: Any) -> Order:
        order = await self.bridge.submit(order_id, product, options, quantity=quantity, priority=priority)
        self._audit_caller("order_submit", f"ok {order.order_id}")
        await self.show_order(order)
        return order

    async def _cancel(self, order_id: str) -> Order:
        try:
            order = await self.bridge.cancel(order_id)
        except OrderRejected as exc:
            self._audit_caller("order_cancel", f"refused {order_id}: {exc.reason}")
            raise
        self._audit_caller("order_cancel", f"ok {order_id}")
        return order

    async def _node_of(self, order: Order) -> ua.NodeId:
        return await self.show_order(order)

    async def _rejected(self, order_id: str, exc: OrderRejected) -> None:
        order_id = clip(order_id, LOGGED_TEXT_CHARS)
        reason = clip(exc.reason, LOGGED_TEXT_CHARS)
        log.warning("order_refused", order_id=order_id, field=exc.field, reason=reason)
        self._audit_caller("order_submit", f"refused {order_id}: {exc}")
        await self._fire("notice", f"order {order_id} refused: {exc}", 500)

    async def _reload(self) -> tuple[int, list[str]]:
        """ReloadMapping: audited, logged and announced as an event, whatever the outcome."""
        try:
            changed = await self.bridge.reload_mapping()
        except MappingError as exc:  # MappingIncompatible too
            report = [str(issue) for issue in exc.issues]
            code = ua.StatusCodes.BadInvalidState
            if not isinstance(exc, MappingIncompatible):
                code = ua.StatusCodes.BadConfigurationError
        except ConfigurationError as exc:
            report, code = [str(exc)], ua.StatusCodes.BadConfigurationError
        else:
            self._audit_caller("mapping_reload", f"ok: {', '.join(changed) or 'no change'}")
            await self._fire("notice", f"mapping reloaded: {len(changed)} change(s)", 300)
            return ua.StatusCodes.Good, changed
        log.warning("mapping_reload_refused", issues=report)
        self._audit_caller("mapping_reload", f"refused: {'; '.join(report)}")
        await self._fire("notice", f"mapping reload refused: {len(report)} issue(s)", 600)
        return code, report

    async def _clear_station(self, station: str, decision: str = "") -> tuple[int, str]:
        """ClearStationError: audited and announced like its twin ReloadMapping."""
        label = clip(station, LOGGED_TEXT_CHARS)
        if station not in self.mapping.stations:
            self._audit_caller("station_clear", f"refused {label}: no such station")
            return (
                ua.StatusCodes.BadNotFound,
                f"no station {label!r} (stations: {', '.join(self.mapping.stations)})",
            )
        try:
            reason = self.bridge.engine.clear_station_error(station, decision or None)
        except DecisionRequired as exc:
            self._audit_caller("station_clear", f"refused {label}: {exc}")
            return ua.StatusCodes.BadInvalidState, str(exc)
        report = f"cleared: {reason}" if reason else "the station was not held"
        if reason and decision:
            report = f"{decision}: {report}"
        self._audit_caller("station_clear", f"ok {station}: {report}")
        return ua.StatusCodes.Good, report

    async def show_order(self, order: Order) -> ua.NodeId:
        """Create the order's node if needed and write its current state; returns its NodeId."""
        async with self._lock:
            nodeid = self._order_nodes.get(order.order_id)
            if nodeid is None:
                nodeid = await self._create_order_node(order)
            await self._write_order(nodeid, order)
            return nodeid

    async def _create_order_node(self, order: Order) -> ua.NodeId:
        assert self.types is not None
        assert self._orders_folder is not None
        path = f"{self.line_path}.Orders.{order.order_id}"
        nodeid = await self._instances.add_object(
            self._orders_folder,
            self.nid(path),
            ua.QualifiedName(order.order_id, self.ns),
            self.types.order_types[order.product],
        )
        product = self.mapping.products[order.product]
        for name, option in product.options.items():
            value = order.options.get(name)
            datatype = self.types.option_enums.get((order.product, name))
            if datatype is not None:
                value = self.types.enum_codes[datatype][value]
            await self._write(f"{path}.Options.{name}", value, option_variant(option))
        self._order_nodes[order.order_id] = nodeid
        for step in order.steps:
            await self._write_step(path, step)
        return nodeid

    async def _write_order(self, nodeid: ua.NodeId, order: Order) -> None:
        assert self.types is not None
        path = nodeid.Identifier
        state_code = self.types.enum_codes[self.types.order_state][order.state]
        values: list[tuple[str, Any, ua.VariantType]] = [
            ("State", state_code, ua.VariantType.Int32),
            ("Product", order.product, ua.VariantType.String),
            ("CurrentStation", order.current_station or "", ua.VariantType.String),
            ("Progress", order.units_done, ua.VariantType.UInt32),
            ("Quantity", order.quantity, ua.VariantType.UInt32),
            ("Priority", order.priority, ua.VariantType.Int32),
            ("FaultStation", order.fault_station or "", ua.VariantType.String),
            ("ResultCode", order.result_code or 0, ua.VariantType.UInt32),
            ("CreatedAt", order.created_at, ua.VariantType.DateTime),
            ("CompletedAt", order.completed_at, ua.VariantType.DateTime),
            ("WaitingFor", order.waiting_for or "", ua.VariantType.String),
        ]
        staged: Staged = []
        for name, value, vtype in values:
            await self._write(f"{path}.{name}", value, vtype, staged=staged)
        await write_values(self._aspace, staged)
        if order.state.is_final:
            self._finished_at.setdefault(order.order_id, order.completed_at or utcnow())

    async def _write_step(self, order_path: str, step: Step) -> None:
        assert self.types is not None
        name = f"{step.unit_index}-{step.route_index}-{step.station}"
        path = f"{order_path}.Steps.{name}"
        if self.nid(path) not in self._aspace:
            steps = self.server.get_node(self.nid(f"{order_path}.Steps"))
            step_name = ua.QualifiedName(name, self.ns)
            await self._instances.add_object(steps, self.nid(path), step_name, self.types.step_type)
        staged: Staged = []
        for field_name, value, vtype in (
            ("Station", step.station, ua.VariantType.String),
            ("Unit", step.unit_index, ua.VariantType.UInt32),
            ("Sequence", step.seq, ua.VariantType.UInt32),
            ("StartedAt", step.started_at, ua.VariantType.DateTime),
            ("FinishedAt", step.finished_at, ua.VariantType.DateTime),
            ("ResultCode", step.result_code or 0, ua.VariantType.UInt32),
            ("Parameters", valid_json(step.parameters), ua.VariantType.String),
            ("Results", valid_json(step.results) if step.results is not None else "", ua.VariantType.String),
        ):
            await self._write(f"{path}.{field_name}", value, vtype, staged=staged)
        await write_values(self._aspace, staged)

    async def _follow_orders(self) -> None:
        async for event in self.bridge.watch():
            try:
                await self._on_order_event(event)
            except Exception:  # keep following: one bad update must not freeze the address space
                log.exception("opcua_order_update_failed", order_id=event.order_id)

    async def _on_order_event(self, event: OrderEvent) -> None:
        order = self.bridge.get(event.order_id)
        if order is None:
            return
        await self.show_order(order)
        assert self.types is not None
        severity = SEVERITY.get(event.state, 100)
        await self._fire(
            "order",
            f"order {event.order_id} {event.state}" + (f" at {event.station}" if event.station else "")
            + (f": {clip(event.message, LOGGED_TEXT_CHARS)}" if event.message else ""),
            severity,
            OrderId=event.order_id,
            NewState=self.types.enum_codes[self.types.order_state][event.state],
            Station=event.station or "",
            ResultCode=event.result_code or 0,
        )

    async def _follow_steps(self) -> None:
        while True:
            order, step, phase = await self._steps.get()
            try:
                await self._on_step(order, step, phase)
            except Exception:
                log.exception("opcua_step_update_failed", order_id=order.order_id, station=step.station)

    async def _on_step(self, order: Order, step: Step, phase: StepPhase) -> None:
        """The step's node as it is now; the station's nodes as of the event (`phase`)."""
        nodeid = await self.show_order(order)
        async with self._lock:
            await self._write_step(nodeid.Identifier, step)
        station_path = f"{self.line_path}.Stations.{step.station}"
        running = phase != StepPhase.CLOSED
        staged: Staged = []
        current = order.order_id if running else ""
        await self._write(f"{station_path}.CurrentOrder", current, ua.VariantType.String, staged=staged)
        fields, station = self._fields[step.station], step.station
        if phase == StepPhase.BEGUN:
            for name, value in step.parameters.items():
                path = f"{station_path}.Parameters.{name}"
                at = step.started_at
                await self._write_field(path, station, name, fields[name], value, at, staged=staged)
        finished = not running and step.finished_at is not None
        if finished:
            cycle_ms = (step.finished_at - step.started_at).total_seconds() * 1000
            path = f"{station_path}.LastCycleTime"
            await self._write(path, cycle_ms, ua.VariantType.Double, step.finished_at, staged=staged)
            for name, value in (step.results or {}).items():
                path = f"{station_path}.Results.{name}"
                at = step.finished_at
                await self._write_field(path, station, name, fields[name], value, at, staged=staged)
        await write_values(self._aspace, staged)
        if finished and step.result_code:  # the station refused or failed the step
            name = self.mapping.result_codes.get(step.result_code, f"code {step.result_code}")
            await self._fire(
                "station",
                f"station {step.station} ended a step of {order.order_id}: {name}",
                700,
                Station=step.station,
                Connected=True,
                ResultCode=step.result_code,
            )

    async def _sweep_finished(self) -> None:
        """Finished orders leave the address space after the retention (they stay in the journal)."""
        retention = self.settings.order_retention_s
        while True:
            await asyncio.sleep(min(max(retention / 4, 0.05), 60))
            cutoff = utcnow() - timedelta(seconds=retention)
            for order_id, finished in list(self._finished_at.items()):
                if finished <= cutoff:
                    async with self._lock:
                        nodeid = self._order_nodes.pop(order_id, None)
                        self._finished_at.pop(order_id, None)
                        if nodeid is not None:
                            await self.server.delete_nodes([self.server.get_node(nodeid)], recursive=True)
                    log.info("order_left_address_space", order_id=order_id)

    # -- stations ---------------------------------------------------------------------------

    async def _on_station_poll(self, link: ModbusStationLink) -> None:
        assert self.types is not None
        name = link.station
        online = link.counters.connected and link.telemetry_read_at is not None
        read_at = datetime.fromtimestamp(link.telemetry_read_at, UTC) if link.telemetry_read_at else utcnow()
        status = link.last_status
        engine = self.bridge.engine
        held = engine.station_errors.get(name) or (
            "status block holds garbage" if link.status_invalid else None
        ) or engine.journal_fault  # a journal that cannot be written stands the whole line
        staged: Staged = []  # written at once below (notify.write_values)
        nodes = self._station_nodes[name]
        seen = (online, held, status, link.status_read_at)
        if seen != self._station_seen.get(name):  # most polls: the status block was not read again
            self._station_seen[name] = seen
            await self._announce_error(name, held)
            state = station_state(online, held is not None, status)
            state_code = self.types.enum_codes[self.types.station_state][state]
            # the status block may be older than this poll's telemetry (handshake.idle_status_interval_s)
            status_at = datetime.fromtimestamp(link.status_read_at, UTC) if link.status_read_at else read_at
            self._stage_changed(staged, nodes.state, state_code, ua.VariantType.Int32, status_at)
            self._stage_changed(staged, nodes.connected, online, ua.VariantType.Boolean)
            if status is not None:
                count, uint32 = status.executed_count, ua.VariantType.UInt32
                self._stage_changed(staged, nodes.cycle_count, count, uint32, status_at, good=online)
        counters = link.counters
        quiet = nodes.read_quiet(counters)
        if quiet != self._quiet_counts.get(name):  # most polls: nothing went wrong, nothing to compare
            self._quiet_counts[name] = quiet
            for (diag_path, vtype), value in zip(nodes.quiet, quiet, strict=True):
                self._stage_changed(staged, diag_path, value, vtype)
        tick = time.monotonic()
        if tick >= self._counted_at.get(name, 0.0):
            self._counted_at[name] = tick + BUSY_COUNTERS_EVERY_S
            for attribute, diag_path in nodes.busy:
                self._stage_changed(staged, diag_path, getattr(counters, attribute), ua.VariantType.UInt64)
        rows: list[Row] = []
        at_s, now = read_at.timestamp(), utcnow()
        doubts, last = link.doubts, self._last_scan.get(name)
        self._last_scan[name] = (link.telemetry, link.setpoints, doubts, online)
        telemetry_plan, setpoint_plan = self._polled[name]
        for values, plan, before in (
            (link.telemetry, telemetry_plan, None if last is None or last[3] != online else last[0]),
            (link.setpoints, setpoint_plan, None if last is None or last[3] != online else last[1]),
        ):
            # what the link decoded anew, when this face saw the poll before (most of them)
            known = link.telemetry_changed if before is link.telemetry_before else None
            for entry in changed_fields(plan, values, doubts, before, last[2] if last else {}, known):
                value = values.get(entry.name)
                doubt = doubts.get(entry.name)
                if online and doubt is None and value is not None:  # the common case, inline
                    self._stage_good(entry, value, read_at, now, staged, rows, at_s)
                    continue
                written = await self._write_field(
                    entry.path, name, entry.name, entry.field, value, read_at, good=online, doubt=doubt,
                    by_exception=entry.deadband, staged=staged,
                )  # fmt: skip
                if written is not None and entry.history_key is not None:
                    value, vtype, code = written
                    stored = None if code & 0x80000000 else value
                    rows.append((entry.history_key, at_s, stored, vtype.value, code))
        if rows and self.history is not None:
            self.history.add(rows)
            self._stage_changed(staged, self._dropped_path, self.history.dropped_rows, ua.VariantType.UInt64)
        await write_values(self._aspace, staged)
        if online != self._station_online[name]:
            was = self._station_online[name]
            self._station_online[name] = online
            if was is not None or not online:
                await self._fire(
                    "station",
                    f"station {name} {'online' if online else 'offline'}",
                    200 if online else 800,
                    Station=name,
                    Connected=online,
                    ResultCode=0,
                )
            if not online:
                await self._mark_station(name, ua.StatusCodes.BadCommunicationError, live_only=True)

    async def _announce_error(self, station: str, reason: str | None) -> None:
        """A station event when a station is held for a handshake it cannot trust, and when that ends."""
        if reason == self._station_error.get(station):
            return
        self._station_error[station] = reason
        message = f"station {station}: {reason}" if reason else f"station {station}: error cleared"
        await self._fire(
            "station", message, 900 if reason else 300, Station=station, Connected=True,
            ResultCode=int(ResultCode.HANDSHAKE_VIOLATION) if reason else 0,
        )  # fmt: skip

    async def _mark_station(self, station: str, code: int, *, live_only: bool = False) -> None:
        """Give a station's PLC values a bad status, keeping the last read's timestamp (the value is
        withheld, as a Bad status requires): BadWaitingForInitialData before the first read,
        BadCommunicationError while the PLC is away."""
        kind = self.mapping.station_type(station)
        path = f"{self.line_path}.Stations.{station}"
        paths = [f"{path}.Parameters.{n}" for n in kind.parameters] + [
            f"{path}.Results.{n}" for n in kind.results
        ]
        if not live_only:
            paths += [f"{path}.Telemetry.{n}" for n in kind.telemetry] + [f"{path}.CycleCount"]
            paths += [f"{path}.Setpoints.{n}" for n in kind.setpoints]
        self._last_scan.pop(station, None)
        for node_path in paths:
            self._published.pop(node_path, None)  # the next good read is written whatever it holds
            current = await self.server.get_node(self.nid(node_path)).read_data_value(
                raise_on_bad_status=False
            )
            await self.server.write_attribute_value(
                self.nid(node_path),
                ua.DataValue(
                    current.Value,
                    StatusCode=ua.StatusCode(code),
                    SourceTimestamp=current.SourceTimestamp,
                    ServerTimestamp=utcnow(),
                ),
            )

    # -- setpoints --------------------------------------------------------------------------

    def _setpoints(self) -> dict[ua.NodeId, Setpoint]:
        assert self.types is not None
        found: dict[ua.NodeId, Setpoint] = {}
        for station, st in self.mapping.stations.items():
            for name in self.mapping.station_types[st.type].setpoints:
                f = self._fields[station][name]
                enum = self.types.field_enums.get((st.type, name))
                codes = self.types.enum_codes[enum] if enum is not None else None
                found[self.nid(f"{self.line_path}.Stations.{station}.Setpoints.{name}")] = Setpoint(
                    station, name, f, codes
                )
        return found

    async def _show_setpoint(self, setpoint: Setpoint, value: Any) -> None:
        path = f"{self.line_path}.Stations.{setpoint.station}.Setpoints.{setpoint.name}"
        await self._write_field(path, setpoint.station, setpoint.name, setpoint.field, value, utcnow())

    async def _setpoint_mismatch(self, setpoint: Setpoint, reason: str) -> None:
        await self._fire(
            "station",
            f"station {setpoint.station}: setpoint {setpoint.name} read back differs from what was written",
            800,
            Station=setpoint.station,
            Connected=True,
            ResultCode=int(ResultCode.READBACK_MISMATCH),
        )
        log.error("setpoint_mismatch", station=setpoint.station, setpoint=setpoint.name, reason=reason)

    async def _write_field(
        self,
        path: str,
        station: str,
        name: str,
        f: Any,
        value: Any,
        at: datetime | None,
        *,
        good: bool = True,
        doubt: codec.Doubt | None = None,
        by_exception: float | None = None,
        staged: Staged | None = None,
    ) -> tuple[Any, ua.VariantType, int] | None:
        """A PLC value with its own status: Bad while the PLC is away or when the value is no
        usable value (not finite, undecodable; the last value stays), Uncertain outside the
        mapping's range (the AnalogItem's EURange), as OPC UA Part 8 has it.

        `by_exception` (a deadband, 0 for none): written only if the status changed or the value
        moved beyond the deadband since last written; returns what was written, or None."""
        assert self.types is not None
        if doubt is None and value is not None:
            doubt = codec.assess(f, value)
        if value is not None and f.type == "enum":
            kind = self.mapping.stations[station].type
            value = self.types.enum_codes[self.types.field_enums[(kind, name)]].get(value, 0)
        if value is None:
            node = self.server.get_node(self.nid(path))
            value = (await node.read_data_value(raise_on_bad_status=False)).Value.Value
        if not good:
            code = ua.StatusCodes.BadCommunicationError
        elif doubt is None:
            code = ua.StatusCodes.Good if value is not None else ua.StatusCodes.BadCommunicationError
        elif not doubt.bad:
            code = ua.StatusCodes.UncertainEngineeringUnitsExceeded
        elif isinstance(value, float) and not math.isfinite(value):
            code = ua.StatusCodes.BadOutOfRange
        else:
            code = ua.StatusCodes.BadDataEncodingInvalid
        last = self._published.get(path)
        if by_exception is not None and last is not None and last[1] == code:
            before = last[0]
            if value == before or (
                by_exception
                and isinstance(value, int | float)
                and isinstance(before, int | float)
                and abs(value - before) <= by_exception
            ):
                return None
        vtype = field_variant(f)
        await self._write(path, value, vtype, at, status=code, staged=staged)
        self._published[path] = (value, code)
        return value, vtype, code

    def _stage_good(
        self, entry: Polled, value: Any, at: datetime, now: datetime, staged: Staged, rows: list[Row],
        at_s: float,
    ) -> None:  # fmt: skip
        """`_write_field` for a polled value the link found good (in range, decoded), and its
        history row, without the lookups: the scan's hot path (docs/telemetry.md)."""
        if entry.codes is not None:
            value = entry.codes.get(value, 0)
        last = self._published.get(entry.path)
        if last is not None and last[1] == _GOOD:
            before = last[0]
            if value == before or (
                entry.deadband and isinstance(before, int | float) and abs(value - before) <= entry.deadband
            ):
                return
        if entry.is_float:
            value = float(value)
        variant = scalar_variant(value, entry.vtype)
        staged.append((entry.nid, entry.attval, data_value(variant, _GOOD_CODE, at, now)))
        self._published[entry.path] = (value, _GOOD)
        if entry.history_key is not None:
            rows.append((entry.history_key, at_s, value, entry.vtype_code, _GOOD))

    def _stage_changed(
        self, staged: Staged, path: str, value: Any, vtype: ua.VariantType, at: datetime | None = None,
        *, good: bool = True,
    ) -> None:  # fmt: skip
        """Onto `staged` (written at once by notify.write_values), unless the node already holds
        this value with this status."""
        status = ua.StatusCodes.Good if good else ua.StatusCodes.BadCommunicationError
        if self._published.get(path) != (value, status):
            staged.append((self.nid(path), None, _data_value(value, vtype, at, status)))
            self._published[path] = (value, status)

    async def _write(
        self,
        path: str,
        value: Any,
        vtype: ua.VariantType,
        at: datetime | None = None,
        *,
        good: bool = True,
        status: int | None = None,
        staged: Staged | None = None,
    ) -> None:
        """One value to the address space now, or onto `staged`, a scan's values written at once
        (notify.write_values)."""
        if status is None:
            status = ua.StatusCodes.Good if good else ua.StatusCodes.BadCommunicationError
        value_now = _data_value(value, vtype, at, status)
        if staged is not None:
            staged.append((self.nid(path), None, value_now))
        else:  # straight to the address space (what Server.write_attribute_value ends in, two calls down)
            await self._aspace.write_attribute_value(self.nid(path), _VALUE, value_now)


def _data_value(value: Any, vtype: ua.VariantType, at: datetime | None, status: int) -> ua.DataValue:
    if vtype in _FLOATS and isinstance(value, int | float):
        value = float(value)
    # A DateTime with no time yet is MinDateTime (a null one cannot be encoded); a null number has
    # no type: no value yet, or withheld under a Bad status (as asyncua's own write would withhold it).
    if value is None and vtype == ua.VariantType.DateTime:
        value = NO_TIME
    if status & 0x80000000 or (value is None and vtype not in _NULLABLE):
        variant = _NULL
    else:
        variant = ua.Variant(value, vtype)
    now = utcnow()
    return ua.DataValue(
        variant, StatusCode=_status_code(status), SourceTimestamp=at or now, ServerTimestamp=now
    )


@functools.cache
def _status_code(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)  # one object per code: asyncua never changes a StatusCode it is given


_GOOD_CODE = _status_code(_GOOD)


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


_MISSING = object()


@dataclass(frozen=True, slots=True)
class _StationNodes:
    """The paths of a station's own variables, made once: each poll stages them."""

    state: str
    connected: str
    cycle_count: str
    busy: tuple[tuple[str, str], ...]  # LinkCounters attribute, path: published once a second
    quiet: tuple[tuple[str, ua.VariantType], ...]  # path, type: published as they change
    read_quiet: Callable[[LinkCounters], tuple[Any, ...]]  # the quiet counters' values, in that order

    @classmethod
    def of(cls, path: str) -> _StationNodes:
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


@dataclass(frozen=True, slots=True)
class Polled:
    """A polled field and all the scan path needs to publish it."""

    name: str
    field: Any
    path: str
    nid: ua.NodeId
    attval: Any  # the node's value attribute (notify.value_attribute)
    vtype: ua.VariantType
    vtype_code: int  # vtype.value, as history rows store it
    is_float: bool
    codes: dict[Any, int] | None  # an enum's name → code
    deadband: float
    history_key: int | None


def valid_json(values: dict[str, Any]) -> str:
    """JSON any client can parse: a value that is not a finite number is written as null."""
    return json.dumps(
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()},
        allow_nan=False,
    )
