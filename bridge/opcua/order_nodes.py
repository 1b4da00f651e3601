"""Orders in the address space: one object per order under the line's Orders folder, with its
options, state and steps, kept in step with the event stream; finished orders leave after the
retention (they stay in the journal).

An order enters the folder by reference only; its nodes are built the first time a client reads,
browses into or subscribes to any of them (on_demand.py), from the order as it stands (in memory
while it has work left, else from the journal), and kept current from then on. An order nobody
looks at costs the face a reference and its events, not ~80 nodes written at every step: that
was most of what the OPC UA face cost the order path (docs/opcua-model.md). The most recent built
finished orders (`keep_full`) keep their nodes; older ones go back to their reference.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from asyncua import Server, ua

from bridge.domain.events import OrderChanged
from bridge.domain.model import Order, OrderState, Step, StepPhase, utcnow
from bridge.limits import LOGGED_TEXT_CHARS, clip
from bridge.mapping.model import LineMapping
from bridge.opcua import asyncua_seams, names
from bridge.opcua.instances import InstanceFactory
from bridge.opcua.on_demand import OnDemandNodes
from bridge.opcua.plant import PlantModel
from bridge.opcua.uatypes import ModelTypes, option_variant
from bridge.opcua.values import Staged, ValueWriter, good_value

log = structlog.get_logger(__name__)

SEVERITY = {OrderState.FAULTED: 700, OrderState.CANCELLED: 400, OrderState.COMPLETED: 300}
KEEP_FULL = 100  # built finished orders that keep their nodes; older ones are built again when asked for
_STRING, _UINT32, _INT32, _DATETIME = (
    ua.VariantType.String, ua.VariantType.UInt32, ua.VariantType.Int32, ua.VariantType.DateTime,
)  # fmt: skip
Members = list[tuple[str, Any, ua.VariantType]]


class OrderNodes:
    def __init__(
        self, server: Server, mapping: LineMapping, types: ModelTypes, values: ValueWriter, plant: PlantModel,
        load: Callable[[str], Order | None], keep_full: int = KEEP_FULL,
    ) -> None:  # fmt: skip
        self.server, self.mapping, self.types, self.values, self.plant = server, mapping, types, values, plant
        self.paths = plant.paths
        self.load, self.keep_full = load, keep_full
        self._instances = InstanceFactory(server)
        self._nodes: dict[str, ua.NodeId] = {}  # order id → its node, while it is in the address space
        self._finished_at: dict[str, datetime] = {}
        self._full: OrderedDict[str, None] = OrderedDict()  # finished orders with their nodes, oldest first
        self._compact: dict[str, str] = {}  # orders by reference only (not built, or no more) → product
        self._prefix = f"{self.paths.orders}."
        # order id → node path → the members last written there: only what changed is written again
        self._shown: dict[str, dict[str, tuple[Any, ...]]] = {}
        self.lock = asyncio.Lock()  # one writer of order nodes at a time

    @property
    def compact(self) -> int:
        """Orders in the address space by reference only."""
        return len(self._compact)

    def built(self, order_id: str) -> bool:
        """Whether the order's nodes are in the address space (then they are kept current)."""
        return order_id in self._nodes and order_id not in self._compact

    async def start(self) -> None:
        """Make every order and step template now (a compact order is built inside a lookup, where
        nothing may be awaited), then let the node table build compact orders on demand."""
        folder = self.server.get_node(self.values.nid(self.paths.orders))
        for n, product in enumerate(self.mapping.products):
            scratch_id = self.values.order_nid(f"{self._prefix}~{n}")
            scratch = await self._instances.prepare(folder, scratch_id, self.types.order_types[product])
            if scratch is None:
                continue
            steps = self.server.get_node(self.values.order_nid(f"{self._prefix}~{n}.Steps"))
            step_id = self.values.order_nid(f"{self._prefix}~{n}.Steps.~")
            await self._instances.prepare(steps, step_id, self.types.step_type)
            await self.server.delete_nodes([scratch], recursive=True)
        table = self.values.aspace
        asyncua_seams.replace_node_table(table, lambda nodes: OnDemandNodes(nodes, self._resolve))

    def add_compact(self, order_id: str, product: str, finished: datetime) -> None:
        """A finished order found in the journal: its reference now, its nodes when asked for."""
        self._refer(order_id, product)
        self._finished_at[order_id] = finished

    def _refer(self, order_id: str, product: str) -> ua.NodeId:
        nodeid = self.values.order_nid(self.paths.order(order_id))
        name = ua.QualifiedName(order_id, self.values.ns)
        folder = self.values.nid(self.paths.orders)
        self._instances.link(folder, nodeid, name, self.types.order_types[product])
        self._nodes[order_id] = nodeid
        self._compact[order_id] = product
        return nodeid

    async def show(self, order: Order) -> ua.NodeId:
        """The order's reference if it has none yet, its current state written if it is built;
        returns its NodeId."""
        async with self.lock:
            nodeid = self._nodes.get(order.order_id) or self._refer(order.order_id, order.product)
            if order.state.is_final:
                self._finished_at.setdefault(order.order_id, order.completed_at or utcnow())
            if order.order_id not in self._compact:
                await self._write_order(nodeid, order)
            return nodeid

    async def on_order(self, changed: OrderChanged) -> None:
        event = changed.event
        await self.show(changed.order)
        await self.plant.fire(
            "order",
            f"order {event.order_id} {event.state}"
            + (f" at {event.station}" if event.station else "")
            + (f": {clip(event.message, LOGGED_TEXT_CHARS)}" if event.message else ""),
            SEVERITY.get(event.state, 100),
            OrderId=event.order_id,
            NewState=self.types.enum_codes[self.types.order_state][event.state],
            Station=event.station or "",
            ResultCode=event.result_code or 0,
        )

    async def on_step(self, order: Order, step: Step) -> None:
        """The step's node as it is now, if its order is built (else it is built as it stands)."""
        nodeid = await self.show(order)
        async with self.lock:
            if order.order_id not in self._compact:
                await self._write_step(nodeid.Identifier, step)

    async def _write_order(self, nodeid: ua.NodeId, order: Order) -> None:
        self._stage_all(order.order_id, nodeid.Identifier, staged := [], self._order_members(order))
        await self.values.flush(staged)
        if _changes_no_more(order):
            self._finished(order.order_id)

    async def _write_step(self, order_path: str, step: Step) -> None:
        path = self.paths.step(order_path, step)
        nodeid = self.values.order_nid(path)
        if nodeid not in self.values.aspace:
            steps = self.server.get_node(self.values.order_nid(f"{order_path}.Steps"))
            step_name = ua.QualifiedName(names.step_name(step), self.values.ns)
            await self._instances.add_object(steps, nodeid, step_name, self.types.step_type)
        shown = self._shown.get(step.order_id, {}).get(path)
        parameters = shown[6] if shown is not None else valid_json(step.parameters)  # they never change
        self._stage_all(step.order_id, path, staged := [], self._step_members(step, parameters))
        await self.values.flush(staged)

    def _order_members(self, order: Order) -> Members:
        state_code = self.types.enum_codes[self.types.order_state][order.state]
        return [
            ("State", state_code, _INT32),
            ("Product", order.product, _STRING),
            ("CurrentStation", order.current_station or "", _STRING),
            ("Progress", order.units_done, _UINT32),
            ("Quantity", order.quantity, _UINT32),
            ("Priority", order.priority, _INT32),
            ("FaultStation", order.fault_station or "", _STRING),
            ("ResultCode", order.result_code or 0, _UINT32),
            ("CreatedAt", order.created_at, _DATETIME),
            ("CompletedAt", order.completed_at, _DATETIME),
            ("WaitingFor", order.waiting_for or "", _STRING),
        ]

    @staticmethod
    def _step_members(step: Step, parameters: str) -> Members:
        return [
            ("Station", step.station, _STRING),
            ("Unit", step.unit_index, _UINT32),
            ("Sequence", step.seq, _UINT32),
            ("StartedAt", step.started_at, _DATETIME),
            ("FinishedAt", step.finished_at, _DATETIME),
            ("ResultCode", step.result_code or 0, _UINT32),
            ("Parameters", parameters, _STRING),
            ("Results", valid_json(step.results) if step.results is not None else "", _STRING),
        ]

    def _options(self, order: Order, path: str) -> list[tuple[ua.NodeId, Any, ua.VariantType]]:
        found = []
        for name, option in self.mapping.products[order.product].options.items():
            value = order.options.get(name)
            datatype = self.types.option_enums.get((order.product, name))
            if datatype is not None:
                value = self.types.enum_codes[datatype][value]
            found.append((self.values.order_nid(f"{path}.Options.{name}"), value, option_variant(option)))
        return found

    def _stage_all(self, order_id: str, path: str, staged: Staged, members: Members) -> None:
        """The members whose value differs from what was last written there, onto `staged`."""
        shown = self._shown.setdefault(order_id, {})
        values = tuple(value for _, value, _ in members)
        before = shown.get(path)
        shown[path] = values
        for i, (name, value, vtype) in enumerate(members):
            if before is None or before[i] != value:
                staged.append((self.values.order_nid(f"{path}.{name}"), None, good_value(value, vtype)))

    # -- orders by reference, built on demand -------------------------------------------------

    def _resolve(self, nodeid: Any) -> bool:
        """Build the nodes of the order by reference `nodeid` belongs to; whether it did. Called by
        the node table on a miss: it must answer at once for everything that is not such a node."""
        if not self._compact or getattr(nodeid, "NamespaceIndex", None) != self.values.ns:
            return False
        ident = nodeid.Identifier
        if not isinstance(ident, str) or not ident.startswith(self._prefix):
            return False
        order_id = ident[len(self._prefix) :].split(".", 1)[0]
        compact = self._compact.pop(order_id, None)
        if compact is None:
            return False
        try:
            order = self.load(order_id)  # as it stands in memory while it has work left
            if order is None:
                return False
            self._build(order)
        except Exception:  # inside a client's request: this node unknown, not the whole request failed
            log.exception("order_not_built", order_id=order_id)
            self._compact[order_id] = compact  # tried again at the next ask
            return False
        if _changes_no_more(order):
            self._shown.pop(order_id, None)
            self._full[order_id] = None  # compact again when newer ones push it out (never in here)
        log.debug("order_built_on_demand", order_id=order_id)
        return True

    def _build(self, order: Order) -> None:
        """The order's nodes and values as it stands, at once (every template exists: start)."""
        path = self.paths.order(order.order_id)
        name = ua.QualifiedName(order.order_id, self.values.ns)
        folder, order_type = self.values.nid(self.paths.orders), self.types.order_types[order.product]
        self._instances.copy(folder, self.values.order_nid(path), name, order_type, link=False)
        for option_nid, value, vtype in self._options(order, path):
            self.values.set_new(option_nid, good_value(value, vtype))
        self._set_new(order.order_id, path, self._order_members(order))
        steps = self.values.order_nid(f"{path}.Steps")
        for step in order.steps:
            step_path = self.paths.step(path, step)
            step_name = ua.QualifiedName(names.step_name(step), self.values.ns)
            step_id = self.values.order_nid(step_path)
            self._instances.copy(steps, step_id, step_name, self.types.step_type, link=True)
            self._set_new(order.order_id, step_path, self._step_members(step, valid_json(step.parameters)))

    def _set_new(self, order_id: str, path: str, members: Members) -> None:
        """The members' first values, remembered as shown: what changes later is written as usual."""
        self._shown.setdefault(order_id, {})[path] = tuple(value for _, value, _ in members)
        for member, value, vtype in members:
            self.values.set_new(self.values.order_nid(f"{path}.{member}"), good_value(value, vtype))

    def _finished(self, order_id: str) -> None:
        """The order changes no more: the newest `keep_full` finished keep their nodes."""
        self._full[order_id] = None
        self._full.move_to_end(order_id)
        self._shown.pop(order_id, None)
        for oldest in list(self._full)[: max(0, len(self._full) - self.keep_full)]:
            self._compact_order(oldest)  # one a client watches keeps its nodes (and its place)

    def _compact_order(self, order_id: str) -> bool:
        """Its nodes go, its reference stays; False if a client watches one of its values."""
        root = self._nodes.get(order_id)
        self._full.pop(order_id, None)
        if root is None or order_id in self._compact:
            return True
        ids = self._instances.subtree(root)
        if any(self.values.watched(nodeid) for nodeid in ids):
            self._full[order_id] = None  # back, at the newest end: looked at again later
            return False
        product = self.values.aspace[self.values.order_nid(f"{root.Identifier}.Product")]
        self._compact[order_id] = product.attributes[ua.AttributeIds.Value].value.Value.Value
        for nodeid in ids:
            del self.values.aspace[nodeid]
        return True

    async def sweep_finished(self, retention_s: float) -> None:
        """Finished orders leave the address space after the retention (they stay in the journal)."""
        while True:
            await asyncio.sleep(min(max(retention_s / 4, 0.05), 60))
            cutoff = utcnow() - timedelta(seconds=retention_s)
            for order_id, finished in list(self._finished_at.items()):
                if finished <= cutoff:
                    async with self.lock:
                        await self._forget(order_id)
                    log.info("order_left_address_space", order_id=order_id)

    async def _forget(self, order_id: str) -> None:
        nodeid = self._nodes.pop(order_id, None)
        self._finished_at.pop(order_id, None)
        self._shown.pop(order_id, None)
        self._full.pop(order_id, None)
        if self._compact.pop(order_id, None) is not None:  # no nodes to delete: only its reference
            self._instances.unlink(self.values.nid(self.paths.orders), nodeid)
        elif nodeid is not None:
            await self.server.delete_nodes([self.server.get_node(nodeid)], recursive=True)


def _changes_no_more(order: Order) -> bool:
    """Finished, and every step closed: no event will change its nodes again."""
    return order.state.is_final and all(step.phase == StepPhase.CLOSED for step in order.steps)


def valid_json(values: dict[str, Any]) -> str:
    """JSON any client can parse: a value that is not a finite number is written as null."""
    return json.dumps(
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()},
        allow_nan=False,
    )
