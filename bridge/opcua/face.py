"""The bridge's OPC UA face: an asyncua server whose address space follows the event stream.

Objects/Plant/Lines/<line>/Stations/<station> and .../Orders/<order_id> (docs/opcua-model.md).
This module only puts the parts together and starts them in order: the server and its security
(server_setup), the plant's instances and events (plant), orders (order_nodes), stations and
their telemetry (station_nodes), the methods (methods, line_calls). Each part reads the bridge
through `Bridge` and its events, never a station link (docs/events.md).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import structlog
from asyncua import Server

from bridge.domain.events import OrderChanged, StationScanned, StepChanged
from bridge.domain.model import utcnow
from bridge.follow import Follower
from bridge.lifecycle import breathe, cancel_and_wait
from bridge.opcua import names, server_setup
from bridge.opcua.alarm_conditions import AlarmConditions
from bridge.opcua.alarm_history import AlarmHistory
from bridge.opcua.history_read import PagedHistory
from bridge.opcua.history_store import HistoryStore
from bridge.opcua.isa95_model import build_job_control
from bridge.opcua.job_control import JobControl
from bridge.opcua.line_calls import LineCalls, audit_with_channel
from bridge.opcua.methods import LineMethods
from bridge.opcua.order_nodes import OrderNodes
from bridge.opcua.plant import PlantModel
from bridge.opcua.session_limits import SessionLedger
from bridge.opcua.setpoints import SetpointAccess
from bridge.opcua.settings import DEFAULT_ENDPOINT, OpcUaSettings
from bridge.opcua.station_nodes import StationNodes
from bridge.opcua.type_tree import build_types
from bridge.opcua.uatypes import APP_URI_PREFIX
from bridge.opcua.values import ValueWriter
from bridge.service import Bridge
from bridge.supervise import start_supervised

log = structlog.get_logger(__name__)

__all__ = ["DEFAULT_ENDPOINT", "OpcUaFace", "OpcUaSettings"]

SCAN_QUEUE = 1_000  # scans waiting for the face: a face that falls behind skips the oldest


class OpcUaFace:
    def __init__(self, bridge: Bridge, settings: OpcUaSettings | None = None) -> None:
        self.bridge = bridge
        self.mapping = bridge.mapping
        self.settings = settings or OpcUaSettings()
        self.server = Server()
        self.endpoint = self.settings.endpoint
        self.audit = functools.partial(audit_with_channel, bridge)
        self.history: HistoryStore | None = None
        self.sessions: SessionLedger | None = None
        self.orders: OrderNodes | None = None
        self.stations: StationNodes | None = None
        self.jobs: JobControl | None = None
        self.alarms: AlarmConditions | None = None
        queue = bridge.engine.settings.watcher_queue
        self._order_events = Follower(
            bridge.events, "opcua-orders", (OrderChanged, StepChanged), self._on_order, maxsize=queue
        )
        self._scans = Follower(
            bridge.events, "opcua-stations", (StationScanned,), self._on_scan, maxsize=SCAN_QUEUE
        )
        self._tasks: list = []
        self.values: ValueWriter | None = None  # the plant's node ids, once started

    def claims(self) -> tuple[dict[str, int], dict[str, int]]:
        """What OPC UA clients hold now and were refused since start (SessionLedger.claims)."""
        return self.sessions.claims() if self.sessions is not None else ({}, {})

    @property
    def app_uri(self) -> str:
        """The server's application URI, also the namespace of the plant's instances."""
        return f"{APP_URI_PREFIX}{self.mapping.line.name}"

    async def prepare(self) -> None:
        """The server itself: standard address space, endpoints, security (one to two seconds of
        CPU on the loop). `linebridge run` gives it to Bridge.before_links, so that no station link
        waits behind it (their progress watchdog would take the stall for a dead PLC); start()
        calls it if nobody did."""
        if self.sessions is None:
            self.sessions = await server_setup.configure(self.server, self.app_uri, self.settings, self.audit)

    async def start(self) -> None:
        settings, server = self.settings, self.server
        await self.prepare()
        # Each part is built without yielding (asyncua's in-process node calls never wait), so the
        # loop is given back between them: a station link must not wait a whole start-up.
        types = await build_types(server, self.mapping)
        await breathe()
        jc_ns = await build_job_control(server, types.ns)
        await breathe()
        self.values = values = ValueWriter(server, await server.register_namespace(self.app_uri), types)
        plant = PlantModel(server, self.mapping, types, values)
        line = await plant.build()
        self.orders = OrderNodes(
            server, self.mapping, types, values, plant, self.bridge.get, settings.finished_in_full
        )
        await self.orders.start()
        await breathe()
        self.stations = stations = StationNodes(self.bridge, types, values, plant)
        calls = LineCalls(self.bridge, plant, self.orders)
        await LineMethods(self.mapping, types, calls).add_to(line, values.ns)
        self.jobs = JobControl(
            self.bridge, server, values.ns, jc_ns, types.ns, calls.audit_caller,
            functools.partial(plant.fire, "notice"), settings.order_retention_s, values.watched,
        )  # fmt: skip
        await self.jobs.build(line)
        self.alarms = AlarmConditions(self.bridge, server, values, calls.audit_caller)
        await self.alarms.build()
        setpoints, write = stations.setpoints(), self.bridge.write_setpoint
        SetpointAccess(
            server, setpoints, write, stations.show_setpoint, calls.audit_caller, stations.setpoint_mismatch
        )
        history_file = settings.history_file or self.bridge.settings.data_dir / "history.sqlite"
        history_file.parent.mkdir(parents=True, exist_ok=True)
        historized = stations.historized(settings.history_retention_s)
        retention = {values.nid(path).to_string(): keep_s for path, keep_s in historized.items()}
        self.history = HistoryStore(history_file, retention_s=retention)
        await self.history.init()
        alarm_history = AlarmHistory(server, self.alarms, self.bridge.journal)
        server.iserver.history_manager = PagedHistory(server.iserver, self.history, alarm_history)
        await stations.start(self.history, historized)
        try:
            self.endpoint = await server_setup.listen(server, settings.endpoint)
        except BaseException:
            await self.history.stop()
            raise
        await plant.init_events()
        self._order_events.subscribe()  # before the orders are read: nothing falls in between
        journal = self.bridge.journal
        last = await journal.run(journal.last_steps, list(self.mapping.stations))
        await stations.steps.restore(*last)  # the step events since then follow it
        self._scans.subscribe()
        await self._show_initial_orders()
        await self._order_events.start()
        await self._scans.start()
        await self.jobs.start()
        await self.alarms.start()
        await alarm_history.announce()  # last: each event generator made sets SubscribeToEvents alone
        retention_s = settings.order_retention_s
        start_supervised(
            self._tasks, "opcua-retention", functools.partial(self.orders.sweep_finished, retention_s)
        )
        start_supervised(self._tasks, "opcua-station-steps", stations.steps.show)
        admission = functools.partial(plant.show_admission, self.bridge.refusing)
        start_supervised(self._tasks, "opcua-admission", admission)
        log.info("opcua_listening", endpoint=self.endpoint, namespace=self.app_uri)

    async def stop(self) -> None:
        # Detach first: nothing may write to the address space (and its history store) once the
        # server has begun to close, or a history write can wait forever on a closed database.
        await self._order_events.stop()
        await self._scans.stop()
        if self.jobs is not None:
            await self.jobs.stop()
        if self.alarms is not None:
            await self.alarms.stop()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self.history is not None:
            await self.history.stop()
        await server_setup.stop(self.server)

    async def trend(self, station: str, field: str, since: float) -> list[tuple[float, Any]] | None:
        """A telemetry field's values since `since` from the history store (the line view's trends);
        None when it keeps no history."""
        if self.history is None or self.values is None:
            return None
        path = names.Paths(self.mapping.line.name).station_value(station, "Telemetry", field)
        return await self.history.recent(self.values.nid(path).to_string(), since)

    async def _show_initial_orders(self) -> None:
        """The orders with work left, in full; the finished ones of the retention by reference (their
        nodes are built when asked for: order_nodes.py)."""
        assert self.orders is not None
        active = self.bridge.engine.active_orders()
        since = utcnow() - timedelta(seconds=self.settings.order_retention_s)
        known = {order.order_id for order in active}
        for order_id, product, finished in self.bridge.journal.finished_since(since):
            if order_id not in known and product in self.mapping.products:
                self.orders.add_compact(order_id, product, finished)
        for order in active:
            await self.orders.show(order)

    async def _on_order(self, event: OrderChanged | StepChanged) -> None:
        assert self.orders is not None
        assert self.stations is not None
        if isinstance(event, OrderChanged):
            await self.orders.on_order(event)
        else:
            await self.orders.on_step(event.order, event.step)
            await self.stations.steps.on_step(event.order, event.step, event.phase)

    async def _on_scan(self, scan: StationScanned) -> None:
        assert self.stations is not None
        await self.stations.on_scan(scan)
