"""The shell's alarms, read as any Part 9 client reads them: a subscription to alarm events on the
Server object, ConditionRefresh, and the retained conditions between RefreshStart and RefreshEnd;
acknowledge, confirm and shelve by calling the condition's methods (docs/alarms.md)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import ua

from bridge.opcua import names
from bridge.opcua.client import ClientError, Line
from bridge.opcua.condition_state import member_id

IDS = ua.ObjectIds
ACTIONS = {
    "ack": IDS.AcknowledgeableConditionType_Acknowledge,
    "confirm": IDS.AcknowledgeableConditionType_Confirm,
    "shelve": IDS.ShelvedStateMachineType_TimedShelve,
    "oneshot": IDS.ShelvedStateMachineType_OneShotShelve,
    "unshelve": IDS.ShelvedStateMachineType_Unshelve,
}


@dataclass(frozen=True)
class AlarmSeen:
    alarm_id: str  # station.name
    condition: ua.NodeId
    event_id: bytes
    severity: int
    message: str
    active: bool
    acked: bool
    confirmed: bool
    shelving: str
    user: str
    comment: str
    time: datetime | None

    @property
    def station(self) -> str:
        return self.alarm_id.partition(".")[0]


class _Refresh:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.ended = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.events.append(event)
        if event.EventType == ua.NodeId(IDS.RefreshEndEventType):
            self.ended.set()


async def retained_alarms(line: Line, timeout_s: float = 5.0) -> list[AlarmSeen]:
    """Every alarm that waits for an operator (active, or not yet acknowledged or confirmed), the
    most severe first."""
    client, seen = line.client, _Refresh()
    subscription = await client.create_subscription(100, seen)
    try:
        kinds = (IDS.AlarmConditionType, IDS.RefreshStartEventType, IDS.RefreshEndEventType)
        types = [client.get_node(ua.NodeId(kind)) for kind in kinds]
        await subscription.subscribe_events(client.nodes.server, types)
        refresh = ua.CallMethodRequest(
            ObjectId=ua.NodeId(IDS.ConditionType), MethodId=ua.NodeId(IDS.ConditionType_ConditionRefresh),
            InputArguments=[ua.Variant(subscription.subscription_id, ua.VariantType.UInt32)],
        )  # fmt: skip
        (result,) = await client.uaclient.call([refresh])
        if not result.StatusCode.is_good():
            raise ClientError(f"ConditionRefresh refused ({result.StatusCode.name})")
        try:
            await asyncio.wait_for(seen.ended.wait(), timeout_s)
        except TimeoutError:
            missing = f"no RefreshEndEvent within {timeout_s} s: is this a linebridge server?"
            raise ClientError(missing) from None
    finally:
        await subscription.delete()
    latest: dict[str, AlarmSeen] = {}
    for event in seen.events:
        if getattr(event, "ConditionName", None):
            alarm = _alarm(event)
            latest[alarm.alarm_id] = alarm  # a change during the refresh: the last one stands
    return sorted(latest.values(), key=lambda a: (-a.severity, a.alarm_id))


_TIMED = ua.NodeId(IDS.ShelvedStateMachineType_TimedShelved)
_ONESHOT = ua.NodeId(IDS.ShelvedStateMachineType_OneShotShelved)


async def out_of_service(line: Line) -> list[str]:
    """Each alarm an operator shelved or disabled, as `STATION.NAME how`: a refresh leaves out the
    disabled ones and those back to normal, so each condition's EnabledState and ShelvingState
    are read (what Part 9 gives every condition in the address space)."""
    paths = _paths(line)
    conditions: list[tuple[str, ua.NodeId]] = []
    for station in await line.child("Stations").get_children_descriptions():
        folder = line.client.get_node(ua.NodeId(paths.alarms(station.BrowseName.Name), line.ns))
        for alarm in await folder.get_children_descriptions():
            conditions.append((f"{station.BrowseName.Name}.{alarm.BrowseName.Name}", alarm.NodeId))
    members = ("EnabledState/Id", "ShelvingState/CurrentState/Id", "ShelvingState/UnshelveTime",
               "ActiveState/Id")  # fmt: skip
    nodes = [line.client.get_node(member_id(c, m)) for _, c in conditions for m in members]
    values = await line.client.read_values(nodes)
    found = []
    for i, (alarm_id, _) in enumerate(conditions):
        enabled, shelving, left_ms, active = values[i * len(members) : (i + 1) * len(members)]
        if enabled is False:
            how = "disabled"
        elif shelving == _TIMED:
            how = f"shelved, {math.ceil(left_ms / 60_000)} min left"
        elif shelving == _ONESHOT:
            how = "shelved until it returns to normal"
        else:
            continue
        found.append(f"{alarm_id} {how}" + (" (active)" if active else ""))
    return found


async def answer(line: Line, alarm_id: str, action: str, comment: str = "", hours: float = 1.0) -> str:
    """`action`: ack, confirm (with a comment), shelve (for `hours`), oneshot, unshelve."""
    alarms = {alarm.alarm_id: alarm for alarm in await retained_alarms(line)}
    alarm = alarms.get(alarm_id)
    if alarm is None:
        waiting = ", ".join(alarms) or "none"
        raise ClientError(f"no alarm {alarm_id!r} waits for an operator (waiting: {waiting})")
    target, args = alarm.condition, []
    if action in ("ack", "confirm"):
        args = [ua.Variant(alarm.event_id, ua.VariantType.ByteString),
                ua.Variant(ua.LocalizedText(comment), ua.VariantType.LocalizedText)]  # fmt: skip
    else:
        target = ua.NodeId(names.shelving_state(alarm.condition.Identifier), alarm.condition.NamespaceIndex)
        if action == "shelve":
            args = [ua.Variant(hours * 3_600_000, ua.VariantType.Double)]
    return await _call(line, alarm_id, action, target, ACTIONS[action], args)


async def switch(line: Line, alarm_id: str, *, enable: bool) -> str:
    """Enable or disable alarm STATION.NAME (Part 9 Enable/Disable on its condition). A disabled
    alarm waits for nobody, so it is found by its path, not among the retained ones."""
    station, _, name = alarm_id.partition(".")
    path = _paths(line).alarm(station, name)
    method = IDS.ConditionType_Enable if enable else IDS.ConditionType_Disable
    action = "enable" if enable else "disable"
    missing = f"no alarm {alarm_id!r} on this line (STATION.NAME, as the mapping names it)"
    return await _call(line, alarm_id, action, ua.NodeId(path, line.ns), method, [], missing=missing)


_NO_NODE = (ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid)


def _paths(line: Line) -> names.Paths:
    """The bridge's node paths under `line` (its name is the last part of its path)."""
    return names.Paths(line.path.rpartition(".")[2])


async def _call(
    line: Line, alarm_id: str, action: str, target: ua.NodeId, method: int, args: list[ua.Variant],
    missing: str | None = None,
) -> str:  # fmt: skip
    """One method call on an alarm's condition; ClientError naming the alarm and the status if
    refused, or saying `missing` if there is no such condition."""
    request = ua.CallMethodRequest(ObjectId=target, MethodId=ua.NodeId(method), InputArguments=args)
    (result,) = await line.client.uaclient.call([request])
    if missing is not None and result.StatusCode.value in _NO_NODE:
        raise ClientError(missing)
    if not result.StatusCode.is_good():
        raise ClientError(f"{alarm_id}: {action} refused ({result.StatusCode.name})")
    return alarm_id


def priority(severity: int) -> str:
    """The line view's priorities: high from 700, medium from 400."""
    return "HIGH" if severity >= 700 else "MEDIUM" if severity >= 400 else "LOW"


def alarm_line(alarm: AlarmSeen) -> str:
    state = "active" if alarm.active else "normal"
    answered = "confirmed" if alarm.confirmed else "acked" if alarm.acked else "unacked"
    shelved = "" if alarm.shelving == "Unshelved" else f" [{alarm.shelving}]"
    since = alarm.time.strftime("%H:%M:%S") if alarm.time else "-"
    return (
        f"{priority(alarm.severity):<6} {alarm.severity:>4}  {alarm.alarm_id:<28} {state:<6} {answered:<9}"
        f" {since}  {alarm.message}{shelved}"
    )


def _alarm(event: Any) -> AlarmSeen:
    def text(value: Any) -> str:
        return (value.Text or "") if isinstance(value, ua.LocalizedText) else str(value or "")

    shelving = getattr(event, "ShelvingState/CurrentState", None)
    names = ("ActiveState", "AckedState", "ConfirmedState")
    state = {name: bool(getattr(event, f"{name}/Id", False)) for name in names}
    return AlarmSeen(
        alarm_id=f"{event.SourceName}.{event.ConditionName}", condition=event.NodeId,
        event_id=event.EventId, severity=event.Severity or 0, message=text(event.Message),
        active=state["ActiveState"], acked=state["AckedState"], confirmed=state["ConfirmedState"],
        shelving=text(shelving) or "Unshelved",
        user=event.ClientUserId or "", comment=text(event.Comment), time=event.Time,
    )  # fmt: skip
