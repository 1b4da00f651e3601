"""One alarm's state and its transitions, as OPC UA Part 9 defines them for an alarm condition:
enabled, active, acknowledged, confirmed, shelved; retained while any of them asks for an operator
(and the alarm is enabled: a disabled one asks nothing until it is enabled again).

Pure: every transition returns a new state or raises AlarmRefused with the reason (the face turns
it into the status code Part 9 names), so the rules are tested without a server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from bridge.mapping.fields import LimitAlarms

Kind = Literal["limit", "offline", "held", "plc_fault", "order_faulted"]
MAX_SHELVE_S = 8 * 3600.0  # MaxTimeShelved: a timed shelve longer than a shift is refused


class Shelving(StrEnum):
    """The ShelvedStateMachine's states, spelled as Part 9 names them."""

    UNSHELVED = "Unshelved"
    TIMED = "TimedShelved"
    ONESHOT = "OneShotShelved"


class Refusal(StrEnum):
    """Why a method on an alarm is refused; each has its Part 9 status code in the face."""

    ALREADY_ACKED = "already acknowledged"
    ALREADY_CONFIRMED = "already confirmed"
    NOT_ACKED = "acknowledge it before confirming"
    ALREADY_SHELVED = "already shelved that way"
    NOT_SHELVED = "not shelved"
    BAD_SHELVING_TIME = "shelving time must be above 0 and at most MaxTimeShelved"
    ALREADY_ENABLED = "already enabled"
    ALREADY_DISABLED = "already disabled"
    DISABLED = "disabled: enable it first"
    UNKNOWN = "no such alarm"


class AlarmRefused(Exception):
    def __init__(self, alarm_id: str, refusal: Refusal) -> None:
        super().__init__(f"{alarm_id}: {refusal}")
        self.alarm_id, self.refusal = alarm_id, refusal


@dataclass(frozen=True, slots=True)
class AlarmDef:
    """What the mapping declares: one condition of one station."""

    station: str
    name: str  # a telemetry field's name for a limit alarm, else the kind
    kind: Kind
    severity: int  # a state alarm's; a limit alarm takes its active limit's
    limits: LimitAlarms | None = None
    unit: str | None = None

    @property
    def alarm_id(self) -> str:
        return f"{self.station}.{self.name}"


@dataclass(frozen=True, slots=True)
class AlarmState:
    """One alarm as it stands. A new alarm needs acknowledging and confirming; it is retained (shown,
    re-sent on ConditionRefresh) while it is active or waits for either."""

    definition: AlarmDef
    changed_at: float  # time.time() of the last change
    active: bool = False
    acked: bool = True
    confirmed: bool = True
    severity: int = 0
    message: str = ""
    limit: str | None = None  # the active limit of a limit alarm: high_high, high, low, low_low
    value: float | None = None  # the value that last moved it
    active_since: float | None = None
    shelving: Shelving = Shelving.UNSHELVED
    unshelve_at: float | None = None  # a timed shelve's end
    user: str = ""  # who last acknowledged, confirmed or shelved it
    comment: str = ""
    enabled: bool = True  # disabled by an operator: judged still, shown and asked of nobody

    @property
    def alarm_id(self) -> str:
        return self.definition.alarm_id

    @property
    def retain(self) -> bool:
        return self.enabled and (self.active or not self.acked or not self.confirmed)

    @property
    def shelved(self) -> bool:
        return self.shelving is not Shelving.UNSHELVED


def recorded(definition: AlarmDef, row: Mapping[str, Any]) -> AlarmState:
    """The alarm as one row of its history recorded it (the journal's `alarms` table): what a
    restart takes up, and what an event history read answers."""
    return AlarmState(
        definition, changed_at=datetime.fromisoformat(row["at"]).timestamp(), active=bool(row["active"]),
        acked=bool(row["acked"]), confirmed=bool(row["confirmed"]), severity=row["severity"],
        message=row["message"], limit=row["limit_name"], value=row["value"],
        shelving=Shelving(row["shelving"]), unshelve_at=row["unshelve_at"], user=row["user"],
        comment=row["comment"], enabled=row["what"] != "disabled",
    )  # fmt: skip


def activate(
    state: AlarmState, now: float, severity: int, message: str, *, limit: str | None = None,
    value: float | None = None,
) -> AlarmState | None:
    """Active now (or at a new limit): needs acknowledging and confirming again when it newly
    became active or got more severe; None when nothing changes."""
    if state.active and state.limit == limit and state.severity == severity and state.message == message:
        return None
    renewed = not state.active or severity > state.severity
    return dataclasses.replace(
        state, active=True, severity=severity, message=message, limit=limit, value=value, changed_at=now,
        active_since=now if not state.active else state.active_since,
        acked=False if renewed else state.acked, confirmed=False if renewed else state.confirmed,
        user="" if renewed else state.user, comment="" if renewed else state.comment,
    )  # fmt: skip


def clear(state: AlarmState, now: float, message: str, value: float | None = None) -> AlarmState | None:
    """Back to normal; a one-shot shelve ends with it. None when it was not active."""
    if not state.active:
        return None
    shelving, until = state.shelving, state.unshelve_at
    if shelving is Shelving.ONESHOT:
        shelving, until = Shelving.UNSHELVED, None
    return dataclasses.replace(
        state, active=False, limit=None, message=message, value=value, changed_at=now,
        active_since=None, shelving=shelving, unshelve_at=until,
    )  # fmt: skip


def enable(state: AlarmState, now: float, user: str) -> AlarmState:
    """Part 9 Enable: shown and asked of operators again, as it stands now."""
    if state.enabled:
        raise AlarmRefused(state.alarm_id, Refusal.ALREADY_ENABLED)
    return dataclasses.replace(state, enabled=True, user=user, changed_at=now)


def disable(state: AlarmState, now: float, user: str) -> AlarmState:
    """Part 9 Disable (a sensor known broken): still judged, so that Enable shows where it stands,
    but retained by nothing and answering no other method until then."""
    if not state.enabled:
        raise AlarmRefused(state.alarm_id, Refusal.ALREADY_DISABLED)
    return dataclasses.replace(state, enabled=False, user=user, changed_at=now)


def _if_enabled(state: AlarmState) -> AlarmState:
    if not state.enabled:
        raise AlarmRefused(state.alarm_id, Refusal.DISABLED)
    return state


def acknowledge(state: AlarmState, now: float, user: str, comment: str) -> AlarmState:
    if _if_enabled(state).acked:
        raise AlarmRefused(state.alarm_id, Refusal.ALREADY_ACKED)
    return dataclasses.replace(state, acked=True, user=user, comment=comment, changed_at=now)


def add_comment(state: AlarmState, now: float, user: str, comment: str) -> AlarmState:
    """A remark on the alarm as it stands (Part 9 AddComment): no state changes."""
    return dataclasses.replace(_if_enabled(state), user=user, comment=comment, changed_at=now)


def confirm(state: AlarmState, now: float, user: str, comment: str) -> AlarmState:
    if not _if_enabled(state).acked:
        raise AlarmRefused(state.alarm_id, Refusal.NOT_ACKED)
    if state.confirmed:
        raise AlarmRefused(state.alarm_id, Refusal.ALREADY_CONFIRMED)
    return dataclasses.replace(state, confirmed=True, user=user, comment=comment, changed_at=now)


def shelve(state: AlarmState, now: float, user: str, seconds: float | None) -> AlarmState:
    """Timed for `seconds`, or one-shot (until it returns to normal) when None."""
    _if_enabled(state)
    if seconds is None:
        if state.shelving is Shelving.ONESHOT:
            raise AlarmRefused(state.alarm_id, Refusal.ALREADY_SHELVED)
        return dataclasses.replace(
            state, shelving=Shelving.ONESHOT, unshelve_at=None, user=user, changed_at=now
        )
    if not 0 < seconds <= MAX_SHELVE_S:
        raise AlarmRefused(state.alarm_id, Refusal.BAD_SHELVING_TIME)
    if state.shelving is Shelving.TIMED:
        raise AlarmRefused(state.alarm_id, Refusal.ALREADY_SHELVED)
    return dataclasses.replace(
        state, shelving=Shelving.TIMED, unshelve_at=now + seconds, user=user, changed_at=now
    )


def unshelve(state: AlarmState, now: float, user: str) -> AlarmState:
    if not _if_enabled(state).shelved:
        raise AlarmRefused(state.alarm_id, Refusal.NOT_SHELVED)
    return dataclasses.replace(
        state, shelving=Shelving.UNSHELVED, unshelve_at=None, user=user, changed_at=now
    )


def shelve_expired(state: AlarmState, now: float) -> AlarmState | None:
    """A timed shelve whose time is up ends by itself."""
    if state.shelving is Shelving.TIMED and state.unshelve_at is not None and now >= state.unshelve_at:
        return dataclasses.replace(state, shelving=Shelving.UNSHELVED, unshelve_at=None, changed_at=now)
    return None
