"""Orders in the address space: one object per order under the line's Orders folder, with its
options, state and steps, kept in step with the event stream; finished orders leave after the
retention (they stay in the journal)."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timedelta
from typing import Any

import structlog
from asyncua import Server, ua

from bridge.domain.model import Order, OrderState, Step, StepPhase, utcnow
from bridge.events import OrderChanged
from bridge.limits import LOGGED_TEXT_CHARS, clip
from bridge.mapping.model import LineMapping
from bridge.opcua import names
from bridge.opcua.instances import InstanceFactory
from bridge.opcua.plant import PlantModel
from bridge.opcua.uatypes import ModelTypes, option_variant
from bridge.opcua.values import Staged, ValueWriter, good_value

log = structlog.get_logger(__name__)

SEVERITY = {OrderState.FAULTED: 700, OrderState.CANCELLED: 400, OrderState.COMPLETED: 300}
_STRING, _UINT32, _INT32, _DATETIME = (
    ua.VariantType.String, ua.VariantType.UInt32, ua.VariantType.Int32, ua.VariantType.DateTime,
)  # fmt: skip


class OrderNodes:
    def __init__(
        self, server: Server, mapping: LineMapping, types: ModelTypes, values: ValueWriter, plant: PlantModel
    ) -> None:
        self.server, self.mapping, self.types, self.values, self.plant = server, mapping, types, values, plant
        self.paths = plant.paths
        self._instances = InstanceFactory(server)
        self._nodes: dict[str, ua.NodeId] = {}  # order id → its node, while it is in the address space
        self._finished_at: dict[str, datetime] = {}
        # order id → node path → the members last written there: only what changed is written again
        self._shown: dict[str, dict[str, tuple[Any, ...]]] = {}
        self.lock = asyncio.Lock()  # one writer of order nodes at a time

    def __len__(self) -> int:
        return len(self._nodes)

    async def show(self, order: Order) -> ua.NodeId:
        """Create the order's node if needed and write its current state; returns its NodeId."""
        async with self.lock:
            nodeid = self._nodes.get(order.order_id)
            if nodeid is None:
                nodeid = await self._create(order)
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
        """The step's node as it is now."""
        nodeid = await self.show(order)
        async with self.lock:
            await self._write_step(nodeid.Identifier, step)

    async def _create(self, order: Order) -> ua.NodeId:
        path = self.paths.order(order.order_id)
        folder = self.server.get_node(self.values.nid(self.paths.orders))
        nodeid = await self._instances.add_object(
            folder,
            self.values.order_nid(path),
            ua.QualifiedName(order.order_id, self.values.ns),
            self.types.order_types[order.product],
        )
        product = self.mapping.products[order.product]
        for name, option in product.options.items():
            value = order.options.get(name)
            datatype = self.types.option_enums.get((order.product, name))
            if datatype is not None:
                value = self.types.enum_codes[datatype][value]
            await self.values.write(
                self.values.order_nid(f"{path}.Options.{name}"), value, option_variant(option)
            )
        self._nodes[order.order_id] = nodeid
        for step in order.steps:
            await self._write_step(path, step)
        return nodeid

    async def _write_order(self, nodeid: ua.NodeId, order: Order) -> None:
        path = nodeid.Identifier
        state_code = self.types.enum_codes[self.types.order_state][order.state]
        self._stage_all(order.order_id, path, staged := [], (
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
        ))  # fmt: skip
        await self.values.flush(staged)
        if order.state.is_final:
            self._finished_at.setdefault(order.order_id, order.completed_at or utcnow())
            if not any(step.phase != StepPhase.CLOSED for step in order.steps):  # it changes no more
                self._shown.pop(order.order_id, None)

    async def _write_step(self, order_path: str, step: Step) -> None:
        path = self.paths.step(order_path, step)
        nodeid = self.values.order_nid(path)
        if nodeid not in self.values.aspace:
            steps = self.server.get_node(self.values.order_nid(f"{order_path}.Steps"))
            step_name = ua.QualifiedName(names.step_name(step), self.values.ns)
            await self._instances.add_object(steps, nodeid, step_name, self.types.step_type)
        results = valid_json(step.results) if step.results is not None else ""
        shown = self._shown.get(step.order_id, {}).get(path)
        parameters = shown[6] if shown is not None else valid_json(step.parameters)  # never change
        self._stage_all(step.order_id, path, staged := [], (
            ("Station", step.station, _STRING),
            ("Unit", step.unit_index, _UINT32),
            ("Sequence", step.seq, _UINT32),
            ("StartedAt", step.started_at, _DATETIME),
            ("FinishedAt", step.finished_at, _DATETIME),
            ("ResultCode", step.result_code or 0, _UINT32),
            ("Parameters", parameters, _STRING),
            ("Results", results, _STRING),
        ))  # fmt: skip
        await self.values.flush(staged)

    def _stage_all(
        self, order_id: str, path: str, staged: Staged, members: tuple[tuple[str, Any, ua.VariantType], ...]
    ) -> None:
        """The members whose value differs from what was last written there, onto `staged`."""
        shown = self._shown.setdefault(order_id, {})
        values = tuple(value for _, value, _ in members)
        before = shown.get(path)
        shown[path] = values
        for i, (name, value, vtype) in enumerate(members):
            if before is None or before[i] != value:
                staged.append((self.values.order_nid(f"{path}.{name}"), None, good_value(value, vtype)))

    async def sweep_finished(self, retention_s: float) -> None:
        """Finished orders leave the address space after the retention (they stay in the journal)."""
        while True:
            await asyncio.sleep(min(max(retention_s / 4, 0.05), 60))
            cutoff = utcnow() - timedelta(seconds=retention_s)
            for order_id, finished in list(self._finished_at.items()):
                if finished <= cutoff:
                    async with self.lock:
                        nodeid = self._nodes.pop(order_id, None)
                        self._finished_at.pop(order_id, None)
                        self._shown.pop(order_id, None)
                        if nodeid is not None:
                            await self.server.delete_nodes([self.server.get_node(nodeid)], recursive=True)
                    log.info("order_left_address_space", order_id=order_id)


def valid_json(values: dict[str, Any]) -> str:
    """JSON any client can parse: a value that is not a finite number is written as null."""
    return json.dumps(
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()},
        allow_nan=False,
    )
