"""The plant's instances (Plant/Lines/<line> with its stations and method nodes) and the events
the line raises, built once at start-up from the mapping (docs/opcua-model.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from asyncua import Node, Server, ua

from bridge.lifecycle import breathe
from bridge.mapping.model import LineMapping
from bridge.opcua import asyncua_seams as seams
from bridge.opcua import names
from bridge.opcua.uatypes import ModelTypes
from bridge.opcua.values import Staged, ValueWriter


class PlantModel:
    def __init__(self, server: Server, mapping: LineMapping, types: ModelTypes, values: ValueWriter) -> None:
        self.server, self.mapping, self.types, self.values = server, mapping, types, values
        self.paths = names.Paths(mapping.line.name)
        self.line_node: Node | None = None
        self._events: dict[str, list[Any]] = {}

    async def build(self) -> Node:
        """Plant → Lines → the line object (its type declares the stations, folders and members)."""
        ns, types, nid = self.values.ns, self.types, self.values.nid
        plant = await self.server.nodes.objects.add_folder(nid(names.PLANT), ua.QualifiedName("Plant", ns))
        lines = await plant.add_folder(nid(names.LINES), ua.QualifiedName("Lines", ns))
        line = await lines.add_object(
            nid(self.paths.line), ua.QualifiedName(self.mapping.line.name, ns), types.line_type
        )
        await line.write_attribute(
            ua.AttributeIds.Description,
            ua.DataValue(ua.Variant(ua.LocalizedText(self.mapping.line.description))),
        )
        self.line_node = line
        stations = self.server.get_node(nid(self.paths.stations))
        for name, station in self.mapping.stations.items():
            await stations.add_object(
                nid(self.paths.station(name)), ua.QualifiedName(name, ns), types.station_types[station.type]
            )
            await breathe()  # asyncua builds without yielding: the links get their turn
        for name, initial in (
            (names.HISTORY_ROWS_DROPPED, ua.Variant(0, ua.VariantType.UInt64)),  # rows lost to a full queue
            (names.ACCEPTING_ORDERS, True),  # whether a new order would be taken now, and why not:
            (names.ORDER_REFUSAL, ""),  # for an MES before it sends one
        ):
            await line.add_variable(nid(self.paths.on_line(name)), ua.QualifiedName(name, ns), initial)
        # Server → Plant → line: a client browsing notifiers from the Server object finds the line.
        server_node = self.server.nodes.server
        await server_node.add_reference(plant.nodeid, ua.ObjectIds.HasNotifier)
        await plant.add_reference(line.nodeid, ua.ObjectIds.HasNotifier)
        await plant.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        return line

    async def show_admission(self, refusing: Callable[[], str | None], every_s: float = 0.5) -> None:
        """AcceptingOrders and OrderRefusal kept to `refusing()` (the bridge's reason any new order
        would be refused now), looked at every `every_s`: the disk's free space changes unannounced.
        A change between accepting and refusing is also an event, for a SCADA's event list."""
        accepting = self.paths.on_line(names.ACCEPTING_ORDERS)
        refusal = self.paths.on_line(names.ORDER_REFUSAL)
        shown = ""
        while True:
            reason = refusing() or ""
            staged: Staged = []
            self.values.stage_changed(staged, accepting, not reason, ua.VariantType.Boolean)
            self.values.stage_changed(staged, refusal, reason, ua.VariantType.String)
            await self.values.flush(staged)
            if bool(reason) != bool(shown):
                told = f"new orders are refused: {reason}" if reason else "new orders are accepted again"
                await self.fire("notice", told, 700 if reason else 300)
            shown = reason
            await asyncio.sleep(every_s)

    async def init_events(self) -> None:
        """An event generator per kind, raised on the line and on the Server object."""
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

    async def fire(self, key: str, message: str, severity: int, **fields: Any) -> None:
        """Raise an event of kind `key` (order, station, notice) with its own fields.

        Not built while no monitored item watches events (events are not historized, and one made
        later does not receive earlier events): a thousand orders raise tens of thousands of them,
        each with a fresh EventId from the OS's random source, and a SCADA client that subscribes
        to values only would have paid for each one."""
        if not seams.events_watched(self.server.iserver):
            return
        for generator in self._events.get(key, []):
            event = generator.event
            for name, value in fields.items():
                setattr(event, name, value)
            event.Severity = severity
            event.SourceName = self.mapping.line.name
            await generator.trigger(message=message)
