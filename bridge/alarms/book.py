"""Every alarm of the line, following the event stream.

Limits from each poll's telemetry, offline / held / PLC fault from each poll, order faulted from
the orders. Each change is journaled (the alarm history) and published as `AlarmChanged`, which the
OPC UA conditions, the line view's banner and the metrics follow; acknowledge, confirm and shelve
come back from those faces with the operator's name (docs/alarms.md).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from bridge.alarms.limits import Pending, judge
from bridge.domain import alarm_condition as cond
from bridge.domain.alarm_condition import AlarmDef, AlarmRefused, AlarmState, Refusal, Shelving
from bridge.domain.events import AlarmChanged, EventHub, OrderChanged, StationScanned
from bridge.domain.model import OrderState
from bridge.follow import Follower
from bridge.mapping.model import LineMapping
from bridge.mapping.vocabulary import is_number

log = structlog.get_logger(__name__)

STATE_KINDS = ("offline", "held", "plc_fault", "order_faulted")


class AlarmJournal(Protocol):
    def add_alarm(self, alarm: AlarmState, what: str) -> None: ...
    def last_alarms(self) -> dict[str, dict[str, Any]]: ...
    async def run(self, call: Callable[..., Any], *args: Any) -> Any: ...


def definitions(mapping: LineMapping) -> list[AlarmDef]:
    """The line's alarms: per station its state alarms (those with a severity), then a limit alarm
    per telemetry field that declares limits."""
    found: list[AlarmDef] = []
    for station in mapping.stations:
        for kind in STATE_KINDS:
            severity = getattr(mapping.alarms, kind)
            if severity:
                found.append(AlarmDef(station, kind, kind, severity))
        for name, f in mapping.station_type(station).telemetry.items():
            if f.alarms is not None:
                found.append(AlarmDef(station, name, "limit", 0, f.alarms, f.unit))
    return found


class AlarmBook:
    def __init__(
        self,
        mapping: LineMapping,
        events: EventHub,
        journal: AlarmJournal,
        held: Callable[[str], str | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.events, self.journal, self._held, self._clock = events, journal, held, clock
        self._codes = mapping.result_codes
        now = clock()
        self.states: dict[str, AlarmState] = {d.alarm_id: AlarmState(d, now) for d in definitions(mapping)}
        self._limits: dict[str, list[AlarmDef]] = {}
        for d in self.definitions():
            if d.kind == "limit":
                self._limits.setdefault(d.station, []).append(d)
        self._pending: dict[str, Pending] = {}
        self._follower = Follower(events, "alarms", (StationScanned, OrderChanged), self._on_event)

    def definitions(self) -> list[AlarmDef]:
        return [state.definition for state in self.states.values()]

    async def start(self) -> None:
        self._follower.subscribe()  # before the scanners start: no first poll falls by
        self._restore(await self.journal.run(self.journal.last_alarms))
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    # -- what the faces read and do ----------------------------------------------------------

    def get(self, alarm_id: str) -> AlarmState:
        try:
            return self.states[alarm_id]
        except KeyError:
            raise AlarmRefused(alarm_id, Refusal.UNKNOWN) from None

    def retained(self) -> list[AlarmState]:
        """The alarms an operator must see or answer: active, or waiting for an acknowledge or a
        confirm; the most severe first."""
        self._expire(self._clock())
        found = [state for state in self.states.values() if state.retain]
        return sorted(found, key=lambda s: (-s.severity, s.changed_at))

    def acknowledge(self, alarm_id: str, user: str, comment: str = "") -> AlarmState:
        state = cond.acknowledge(self.get(alarm_id), self._clock(), user, comment)
        if state.definition.kind == "order_faulted":  # an event, not a state: the acknowledge ends it
            state = cond.clear(state, state.changed_at, state.message) or state
        return self._change(state, "acknowledged")

    def add_comment(self, alarm_id: str, user: str, comment: str) -> AlarmState:
        return self._change(cond.add_comment(self.get(alarm_id), self._clock(), user, comment), "commented")

    def confirm(self, alarm_id: str, user: str, comment: str = "") -> AlarmState:
        return self._change(cond.confirm(self.get(alarm_id), self._clock(), user, comment), "confirmed")

    def shelve(self, alarm_id: str, user: str, seconds: float | None) -> AlarmState:
        """Timed for `seconds`, or one-shot (until it returns to normal) when None."""
        return self._change(cond.shelve(self.get(alarm_id), self._clock(), user, seconds), "shelved")

    def unshelve(self, alarm_id: str, user: str) -> AlarmState:
        return self._change(cond.unshelve(self.get(alarm_id), self._clock(), user), "unshelved")

    def enable(self, alarm_id: str, user: str) -> AlarmState:
        return self._change(cond.enable(self.get(alarm_id), self._clock(), user), "enabled")

    def disable(self, alarm_id: str, user: str) -> AlarmState:
        return self._change(cond.disable(self.get(alarm_id), self._clock(), user), "disabled")

    # -- following the line ------------------------------------------------------------------

    async def _on_event(self, event: StationScanned | OrderChanged) -> None:
        now = self._clock()
        if isinstance(event, StationScanned):
            self._scan(event, now)
        elif event.event.state is OrderState.FAULTED and event.event.station:
            e = event.event
            state = self.states.get(f"{e.station}.order_faulted")
            if state is not None:  # None: off in the mapping. Every fault is news: one still active is
                # ended and raised anew, so a second fault asks for an acknowledge again
                code = f"result code {e.result_code} ({self._codes.get(e.result_code or 0, 'unknown')})"
                message = f"order {e.order_id} faulted at {e.station}: {code} {e.message}".rstrip()
                fresh = cond.clear(state, now, state.message) or state
                renewed = cond.activate(fresh, now, state.definition.severity, message) or fresh
                self._change(renewed, "activated")
        self._expire(now)

    def _scan(self, scan: StationScanned, now: float) -> None:
        station = scan.station
        why = scan.counters.last_error or "no answer"
        self._set(f"{station}.offline", not scan.online, now, f"{station}: the PLC does not answer ({why})")
        held = self._held(station)
        self._set(f"{station}.held", held is not None, now, f"{station} held: {held}")
        if not scan.online:
            return  # what was not read is not judged: its alarms stand as they were
        garbage = f"{station}: the status block holds garbage"
        self._set(f"{station}.plc_fault", scan.status_invalid, now, garbage)
        for d in self._limits.get(station, ()):
            value = scan.telemetry.get(d.name)
            if d.name in scan.read and d.name not in scan.doubts and is_number(value):
                self._limit(d, float(value), now)

    def _limit(self, d: AlarmDef, value: float, now: float) -> None:
        assert d.limits is not None
        state = self.states[d.alarm_id]
        pending = self._pending.get(d.alarm_id)
        limit, self._pending[d.alarm_id] = judge(d.limits, value, state.limit, pending, now)
        unit = f" {d.unit}" if d.unit else ""
        if limit is None:
            message = f"{d.alarm_id} {value:g}{unit} back within its limits"
            changed, what = cond.clear(state, now, message, value), "cleared"
        else:
            if state.active and limit == state.limit:
                return  # the same limit, a new value: no news for an operator (the value has its node)
            bound = getattr(d.limits, limit)
            side = "above" if limit.startswith("high") else "below"
            message = f"{d.alarm_id} {value:g}{unit} {side} its {limit} limit {bound.limit:g}{unit}"
            changed = cond.activate(state, now, bound.severity, message, limit=limit, value=value)
            what = "escalated" if bound.severity > state.severity else "eased"
            what = what if state.active else "activated"
        if changed is not None:
            self._change(changed, what)

    def _set(self, alarm_id: str, active: bool, now: float, message: str) -> None:
        state = self.states.get(alarm_id)
        if state is None:  # that kind is off in the mapping
            return
        if active:
            if state.active:
                return  # still active: the reason's words may change, its state does not
            changed, what = cond.activate(state, now, state.definition.severity, message), "activated"
        else:
            changed, what = cond.clear(state, now, f"{alarm_id} back to normal"), "cleared"
        if changed is not None:
            self._change(changed, what)

    def _expire(self, now: float) -> None:
        for state in list(self.states.values()):
            if state.shelving is Shelving.TIMED and (changed := cond.shelve_expired(state, now)):
                self._change(changed, "unshelved")

    def _change(self, state: AlarmState, what: str) -> AlarmState:
        self.states[state.alarm_id] = state
        if not state.enabled and what != "disabled":  # judged, told nobody: Enable shows the outcome
            return state  # (and the journal's newest row for it stays the "disabled" one a restart reads)
        self.journal.add_alarm(state, what)
        self.events.publish(AlarmChanged(state, what))
        log.info(
            "alarm_" + what, alarm=state.alarm_id, station=state.definition.station, severity=state.severity,
            active=state.active, acked=state.acked, confirmed=state.confirmed, user=state.user or None,
            message=state.message,
        )  # fmt: skip
        return state

    def _restore(self, rows: dict[str, dict[str, Any]]) -> None:
        """Take up what the last run left: an alarm not yet acknowledged or confirmed, or shelved,
        stays so; whether it is active is judged again from the next poll."""
        for alarm_id, row in rows.items():
            state = self.states.get(alarm_id)
            if state is None:
                continue
            restored = dataclasses.replace(
                cond.recorded(state.definition, row), changed_at=state.changed_at,
                active_since=self._clock() if row["active"] else None,
            )  # fmt: skip
            if restored.retain or restored.shelved or not restored.enabled:
                self.states[alarm_id] = restored

