"""A station's step nodes: CurrentOrder, Parameters, LastCycleTime and Results, the bridge's own
record of the station's latest step (not a live read). Written at most every `STEP_VIEW_S`, the
latest step winning: a line at full speed ends a step at each station every few milliseconds, and
writing each one was a third of the OPC UA face's cost (docs/engine.md). A change after a quiet
spell is written at once; the order's own nodes keep every step (docs/opcua-model.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import ua

from bridge.domain.model import Order, Step, StepPhase, utcnow
from bridge.follow import at_most_every
from bridge.mapping.model import LineMapping
from bridge.opcua.plant import PlantModel
from bridge.opcua.values import Staged, ValueWriter

STEP_VIEW_S = 0.05
WriteValue = Callable[..., Awaitable[Any]]  # StationNodes.write_value: (station, folder, name, value, at)


class StepNodes:
    """`online(station)`: False while its PLC is away (its step values wait), else True or None."""

    def __init__(
        self, mapping: LineMapping, values: ValueWriter, plant: PlantModel, write_value: WriteValue,
        online: Callable[[str], bool | None],
    ) -> None:  # fmt: skip
        self.mapping, self.values, self.plant, self.paths = mapping, values, plant, plant.paths
        self._write_value, self._online = write_value, online
        # station → the step whose parameters, and the step whose end, the nodes show: shown again
        # when the station answers after an outage, and taken from the journal at start
        self._shown_begun: dict[str, Step] = {}
        self._shown_ended: dict[str, Step] = {}
        self._due: dict[str, _StepView] = {}  # station → what its step nodes show at the next write
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Tell clients the pace: each step node's MinimumSamplingInterval is STEP_VIEW_S."""
        step_view_ms = ua.DataValue(ua.Variant(STEP_VIEW_S * 1000, ua.VariantType.Double))
        for station in self.mapping.stations:
            for path in self.step_paths(station):
                node = self.values.server.get_node(self.values.nid(path))
                await node.write_attribute(ua.AttributeIds.MinimumSamplingInterval, step_view_ms)

    def step_paths(self, station: str) -> list[str]:
        """The station's step nodes: what `show` writes."""
        own = self.paths.station(station)
        return [f"{own}.CurrentOrder", f"{own}.LastCycleTime", *self.record_paths(station)]

    def record_paths(self, station: str) -> list[str]:
        """Its Parameters and Results: the bridge's record of its last step, not a live read."""
        kind, value = self.mapping.station_type(station), self.paths.station_value
        paths = [value(station, "Parameters", n) for n in kind.parameters]
        return paths + [value(station, "Results", n) for n in kind.results]

    async def on_step(self, order: Order, step: Step, phase: StepPhase) -> None:
        """The station's nodes as of the event (`phase`), written by `show`: CurrentOrder,
        Parameters when it began, LastCycleTime and Results when it ended."""
        due = self._due.get(step.station)
        if due is None:
            due = self._due[step.station] = _StepView()
        running = phase != StepPhase.CLOSED
        due.current, due.current_at = (order.order_id if running else ""), utcnow()
        if phase == StepPhase.BEGUN:
            due.begun = step
        finished = not running and step.finished_at is not None
        if finished:
            due.ended = step
        self._changed.set()
        if finished and step.result_code:  # the station refused or failed the step: an event, at once
            name = self.mapping.result_codes.get(step.result_code, f"code {step.result_code}")
            await self.plant.fire(
                "station", f"station {step.station} ended a step of {order.order_id}: {name}", 700,
                Station=step.station, Connected=True, ResultCode=step.result_code,
            )  # fmt: skip

    async def show(self) -> None:
        """Writes what `on_step` noted, at once after a quiet spell, then at most every STEP_VIEW_S
        (the face supervises it)."""
        await at_most_every(STEP_VIEW_S, self._changed, self._show_due)

    async def _show_due(self) -> None:
        due, self._due = self._due, {}
        staged: Staged = []
        for station, view in due.items():
            current = self.values.nid(f"{self.paths.station(station)}.CurrentOrder")
            at, withheld = view.current_at, self._online(station) is False
            await self.values.write(current, view.current, ua.VariantType.String, at, staged=staged)
            if view.begun is not None:
                self._shown_begun[station] = view.begun
                if not withheld:  # while the PLC is away, shown when it answers again (show_again)
                    await self._show_begun(view.begun, staged)
            if view.ended is not None:
                self._shown_ended[station] = view.ended
                if not withheld:
                    await self._show_ended(view.ended, staged)
        await self.values.flush(staged)

    async def restore(self, begun: Collection[Step], ended: Collection[Step]) -> None:
        """The journal's newest step at each station (`begun`) and newest that ended (`ended`),
        shown as they were before a restart, with the steps' own timestamps."""
        for steps, show in ((begun, self._show_begun), (ended, self._show_ended)):
            staged: Staged = []
            for step in steps:
                if step.station in self.mapping.stations:  # a station the mapping still has
                    await show(step, staged)
            await self.values.flush(staged)

    async def show_again(self, station: str) -> None:
        """The last step's values, good again: they are the bridge's own record, withheld only
        while the station did not answer."""
        staged: Staged = []
        if (begun := self._shown_begun.get(station)) is not None:
            await self._show_begun(begun, staged)
        if (ended := self._shown_ended.get(station)) is not None:
            await self._show_ended(ended, staged)
        await self.values.flush(staged)

    async def _show_begun(self, step: Step, staged: Staged) -> None:
        self._shown_begun[step.station] = step
        known, at = self.mapping.station_type(step.station).parameters, step.started_at
        for name, value in step.parameters.items():
            if name in known:  # a parameter the mapping (reloaded since?) still declares
                await self._write_value(step.station, "Parameters", name, value, at, staged=staged)

    async def _show_ended(self, step: Step, staged: Staged) -> None:
        assert step.finished_at is not None
        self._shown_ended[step.station] = step
        cycle_ms = (step.finished_at - step.started_at).total_seconds() * 1000
        cycle = self.values.nid(f"{self.paths.station(step.station)}.LastCycleTime")
        await self.values.write(cycle, cycle_ms, ua.VariantType.Double, step.finished_at, staged=staged)
        known = self.mapping.station_type(step.station).results
        for name, value in (step.results or {}).items():
            if name in known:
                await self._write_value(step.station, "Results", name, value, step.finished_at, staged=staged)


@dataclass(slots=True)
class _StepView:
    """What a station's step nodes are to show: its current order (as of `current_at`), the last
    step that began and the last that ended since they were last written."""

    current: str = ""
    current_at: datetime | None = None
    begun: Step | None = None
    ended: Step | None = None
