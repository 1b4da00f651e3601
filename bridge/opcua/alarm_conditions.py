"""The line's alarms as OPC UA Alarms & Conditions (Part 9).

Each alarm of the book is a condition object under its station (Stations/<station>/Alarms/<name>,
referenced by HasCondition), of the standard type for its kind: ExclusiveLevelAlarmType for a
telemetry field's limits, SystemOffNormalAlarmType for offline and PLC fault, OffNormalAlarmType
for held, DiscreteAlarmType for an order that faulted. Its events are raised on the Server object,
where alarm clients subscribe; ConditionRefresh re-sends the retained ones (asyncua's own, bound at
start-up). Acknowledge, Confirm, AddComment, Enable, Disable, TimedShelve, OneShotShelve and Unshelve
are answered here with a status, never an exception, audited with the caller (operators and
above: security/rules.py).

The condition objects carry their type, methods and ShelvingState, and the state variables of
their type (condition_state.py), kept equal to the fields of the condition's last event, so a
client that reads an alarm finds what one that subscribes is told (docs/alarms.md).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import Node, Server, ua
from asyncua.server.event_generator import EventGenerator

from bridge.domain.alarm_condition import MAX_SHELVE_S, AlarmDef, AlarmRefused, AlarmState, Refusal
from bridge.domain.events import AlarmChanged
from bridge.follow import Follower
from bridge.lifecycle import breathe
from bridge.opcua import condition_state, names
from bridge.opcua.values import ValueWriter
from bridge.security.rules import current_user
from bridge.service import Bridge

log = structlog.get_logger(__name__)

IDS = ua.ObjectIds
TYPES = {
    "limit": IDS.ExclusiveLevelAlarmType,
    "offline": IDS.SystemOffNormalAlarmType,
    "plc_fault": IDS.SystemOffNormalAlarmType,
    "held": IDS.OffNormalAlarmType,
    "order_faulted": IDS.DiscreteAlarmType,
}
CLASSES = {  # ConditionClass: what kind of fault an operator is looking at
    "offline": (IDS.SystemConditionClassType, "System"),
    "plc_fault": (IDS.SystemConditionClassType, "System"),
}
PROCESS = (IDS.ProcessConditionClassType, "Process")
LIMIT_STATES = {"high_high": "HighHigh", "high": "High", "low": "Low", "low_low": "LowLow"}
_UNSHELVE_TIME = "ShelvingState/UnshelveTime"  # counts down: computed at each Read (Part 9)
ACKNOWLEDGE = (IDS.AcknowledgeableConditionType_Acknowledge,)
CONFIRM = (IDS.AcknowledgeableConditionType_Confirm,)
COMMENT = (IDS.ConditionType_AddComment,)
ENABLE = (IDS.ConditionType_Enable,)
DISABLE = (IDS.ConditionType_Disable,)
UNSHELVE = (IDS.ShelvedStateMachineType_Unshelve, IDS.AlarmConditionType_ShelvingState_Unshelve)
ONESHOT = (IDS.ShelvedStateMachineType_OneShotShelve, IDS.AlarmConditionType_ShelvingState_OneShotShelve)
REFRESH = ((IDS.ConditionType_ConditionRefresh, 1), (IDS.ConditionType_ConditionRefresh2, 2))
TIMED = (IDS.ShelvedStateMachineType_TimedShelve, IDS.AlarmConditionType_ShelvingState_TimedShelve)
STATUS = {
    Refusal.ALREADY_ACKED: ua.StatusCodes.BadConditionBranchAlreadyAcked,
    Refusal.ALREADY_CONFIRMED: ua.StatusCodes.BadConditionBranchAlreadyConfirmed,
    Refusal.NOT_ACKED: ua.StatusCodes.BadInvalidState,
    Refusal.ALREADY_SHELVED: ua.StatusCodes.BadConditionAlreadyShelved,
    Refusal.NOT_SHELVED: ua.StatusCodes.BadConditionNotShelved,
    Refusal.BAD_SHELVING_TIME: ua.StatusCodes.BadShelvingTimeOutOfRange,
    Refusal.UNKNOWN: ua.StatusCodes.BadNodeIdUnknown,
    Refusal.ALREADY_ENABLED: ua.StatusCodes.BadConditionAlreadyEnabled,
    Refusal.ALREADY_DISABLED: ua.StatusCodes.BadConditionAlreadyDisabled,
    Refusal.DISABLED: ua.StatusCodes.BadConditionDisabled,
}
EXTRA_FIELDS = {  # event fields asyncua's event classes do not declare, or declare as a NodeId
    "MaxTimeShelved": ua.VariantType.Double,  # Duration, ms
    "ShelvingState/CurrentState": ua.VariantType.LocalizedText,
    _UNSHELVE_TIME: ua.VariantType.Double,
    "LimitState/CurrentState": ua.VariantType.LocalizedText,
    "ShelvingState/CurrentState/Id": ua.VariantType.NodeId,
}
ADD_AT_ONCE = 200  # state variables added in one request: ~25 ms of the loop (about 1,200 in all)
RECENT_EVENTS = 16  # an Acknowledge may name any of a condition's last events of this activation


@dataclass
class ConditionNode:
    condition: ua.NodeId
    shelving: ua.NodeId
    source: ua.NodeId
    input_node: ua.NodeId | None
    generator: EventGenerator
    members: dict[str, condition_state.Member]  # its state variables, by the event field each mirrors
    event_ids: deque[bytes] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))


class AlarmConditions:
    def __init__(
        self, bridge: Bridge, server: Server, values: ValueWriter, audit: Callable[[str, str], None]
    ) -> None:
        self.book, self.server, self.values, self._audit = bridge.alarms, server, values, audit
        self.paths = names.Paths(bridge.mapping.line.name)
        self._nodes: dict[str, ConditionNode] = {}
        self._alarm_of: dict[ua.NodeId, str] = {}  # condition and ShelvingState node → alarm id
        self._follower = Follower(bridge.events, "opcua-alarms", (AlarmChanged,), self._on_change)

    async def build(self) -> None:
        """The condition objects, their event generators, and the methods' callbacks."""
        nid, ns = self.values.nid, self.values.ns
        folders: dict[str, Node] = {}
        typed: set[int] = set()
        items: list[ua.AddNodesItem] = []  # conditions' state variables, added some at a time
        for d in self.book.definitions():
            station = self.server.get_node(nid(self.paths.station(d.station)))
            if d.station not in folders:
                folders[d.station] = await station.add_folder(
                    nid(self.paths.alarms(d.station)), ua.QualifiedName(names.ALARMS, ns)
                )
            path = self.paths.alarm(d.station, d.name)
            etype = TYPES[d.kind]
            condition = await _add_object(folders[d.station], nid(path), ua.QualifiedName(d.name, ns), etype)
            await station.add_reference(condition.nodeid, IDS.HasCondition)
            for method in (*ACKNOWLEDGE, *CONFIRM, *COMMENT, *ENABLE, *DISABLE):
                await condition.add_reference(ua.NodeId(method), IDS.HasComponent)
            shelving = await _add_object(
                condition, nid(names.shelving_state(path)), ua.QualifiedName("ShelvingState", 0),
                IDS.ShelvedStateMachineType,
            )  # fmt: skip
            for method in (UNSHELVE[0], ONESHOT[0], TIMED[0]):
                await shelving.add_reference(ua.NodeId(method), IDS.HasComponent)
            generator = EventGenerator(self.server.iserver.isession)
            await generator.init(etype, IDS.Server, add_generates_event=etype not in typed)
            typed.add(etype)
            for name, vtype in EXTRA_FIELDS.items():
                generator.event.add_property(name, None, vtype)
            value = None
            if d.kind == "limit":
                value = nid(self.paths.station_value(d.station, "Telemetry", d.name))
            limits = [LIMIT_STATES[name] for name, _ in d.limits.limits()] if d.limits is not None else []
            members = condition_state.members(d.kind, limits)
            items += condition_state.add_items(condition.nodeid, members)
            if len(items) >= ADD_AT_ONCE:
                await self._add(items)
            self._nodes[d.alarm_id] = ConditionNode(
                condition.nodeid, shelving.nodeid, station.nodeid, value, generator, members
            )
            self._alarm_of[condition.nodeid] = self._alarm_of[shelving.nodeid] = d.alarm_id
        await self._add(items)
        for ids, callback in (
            (ACKNOWLEDGE, self._acknowledge), (CONFIRM, self._confirm), (COMMENT, self._comment),
            (ENABLE, self._enable), (DISABLE, self._disable),
            (UNSHELVE, self._unshelve),
            (ONESHOT, self._oneshot), (TIMED, self._timed),
        ):  # fmt: skip
            for method in ids:
                self.server.link_method(self.server.get_node(ua.NodeId(method)), callback)
        for method, count in REFRESH:  # in front of asyncua's own, which raises on a missing argument
            self.server.link_method(
                self.server.get_node(ua.NodeId(method)), functools.partial(self._refresh, count)
            )

    async def _add(self, items: list[ua.AddNodesItem]) -> None:
        """Conditions' state variables at once, then the loop's other work."""
        for result in await self.server.iserver.isession.add_nodes(items):
            result.StatusCode.check()
        items.clear()
        await breathe()

    async def start(self) -> None:
        """Raise every retained alarm once (no client sees it yet: asyncua keeps it for ConditionRefresh),
        then follow the book."""
        self._follower.subscribe()
        retained = {state.alarm_id for state in self.book.retained()}
        for d in self.book.definitions():
            state = self.book.get(d.alarm_id)
            if d.alarm_id in retained:
                await self._show(state)
            else:  # never raised here: what its variables read until it is
                await self._mirror(self._nodes[d.alarm_id], state, self.event_as_of(state))
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    # -- for the event history (alarm_history.py) ----------------------------------------------

    def definition(self, alarm_id: str) -> AlarmDef:
        return self.book.get(alarm_id).definition

    def history_sources(self) -> dict[ua.NodeId, tuple[str, ...]]:
        """Which alarms each node's event history answers: the Server object's every alarm, a
        station's its own, a condition's itself."""
        sources: dict[ua.NodeId, tuple[str, ...]] = {ua.NodeId(IDS.Server): tuple(self._nodes)}
        for alarm_id, node in self._nodes.items():
            sources[node.source] = (*sources.get(node.source, ()), alarm_id)
            sources[node.condition] = (alarm_id,)
        return sources

    def event_as_of(self, state: AlarmState) -> dict[str, Any]:
        """The event the alarm's condition would raise for `state`, as of its change, but for an
        EventId: what an unraised condition's variables read, and a history row's event."""
        at = datetime.fromtimestamp(state.changed_at, UTC)
        return self.fields(state) | {
            "EventType": ua.NodeId(TYPES[state.definition.kind]), "Time": at, "ReceiveTime": at,
            "Message": ua.LocalizedText(state.message or state.alarm_id),
        }  # fmt: skip

    def field_types(self) -> dict[str, ua.VariantType]:
        """How each event field travels, by its name (a select clause's browse path)."""
        types = {"NodeId": ua.VariantType.NodeId} | {
            f"Severity{part}": ua.VariantType.UInt16 for part in LIMIT_STATES.values()
        }
        for node in self._nodes.values():
            types.update({path: member[3] for path, member in node.members.items()})
        return types

    async def _on_change(self, change: AlarmChanged) -> None:
        await self._show(change.alarm)

    async def _show(self, state: AlarmState) -> None:
        node = self._nodes[state.alarm_id]
        event = node.generator.event
        fields = self.fields(state, last_severity=event.Severity)
        for name, value in fields.items():
            setattr(event, name, value)
        if state.active and state.active_since == state.changed_at:
            node.event_ids.clear()  # newly active: an acknowledge of an earlier activation is refused
        await node.generator.trigger(
            time_attr=datetime.fromtimestamp(state.changed_at, UTC), message=state.message or state.alarm_id
        )
        event_id = event.EventId.Value if isinstance(event.EventId, ua.Variant) else event.EventId
        node.event_ids.append(bytes(event_id))
        raised = {
            "EventId": bytes(event_id), "EventType": event.EventType, "Time": event.Time,
            "ReceiveTime": event.ReceiveTime, "Message": event.Message,
        }  # fmt: skip
        await self._mirror(node, state, fields | raised)

    async def _mirror(self, node: ConditionNode, state: AlarmState, fields: dict[str, Any]) -> None:
        """The condition's state variables, as the event fields say (condition_state.py)."""
        fields |= condition_state.derived(state, fields)
        at = datetime.fromtimestamp(state.changed_at, UTC)
        staged: list[Any] = []
        for path, (_, _, _, vtype) in node.members.items():
            nodeid = condition_state.member_id(node.condition, path)
            await self.values.write(nodeid, fields.get(path), vtype, at, staged=staged)
        await self.values.flush(staged)  # monitored items are told the change, then ...
        if _UNSHELVE_TIME in node.members:  # ... a Read gets the time left as it is then (Part 9)
            nodeid = condition_state.member_id(node.condition, _UNSHELVE_TIME)
            self.server.iserver.set_attribute_value_callback(nodeid, _time_left(state.unshelve_at))

    def fields(self, state: AlarmState, last_severity: int | None = None) -> dict[str, Any]:
        """The condition's event fields as the alarm stands (its variables mirror them)."""
        node, d = self._nodes[state.alarm_id], state.definition
        class_id, class_name = CLASSES.get(d.kind, PROCESS)
        severity = max(1, state.severity or d.severity)
        fields: dict[str, Any] = {
            "NodeId": node.condition, "SourceNode": node.source, "SourceName": d.station,
            "ConditionName": d.name, "ConditionClassId": ua.NodeId(class_id),
            "ConditionClassName": ua.LocalizedText(class_name), "BranchId": ua.NodeId(),
            "Retain": state.retain, "EnabledState/Id": state.enabled,
            "EnabledState": ua.LocalizedText("Enabled" if state.enabled else "Disabled"),
            "LastSeverity": last_severity or severity, "Severity": severity,
            "Comment": ua.LocalizedText(state.comment), "ClientUserId": state.user,
            "Quality": ua.StatusCode(ua.StatusCodes.Good), "SuppressedOrShelved": state.shelved,
            "ShelvingState/CurrentState": ua.LocalizedText(str(state.shelving)),
            _UNSHELVE_TIME: _ms_until(state.unshelve_at), "MaxTimeShelved": MAX_SHELVE_S * 1000,
            "InputNode": node.input_node or ua.NodeId(),
            "ShelvingState/CurrentState/Id": ua.NodeId(condition_state.SHELVING_IDS[state.shelving]),
        }  # fmt: skip
        for name, on, yes, no in (
            ("ActiveState", state.active, "Active", "Inactive"),
            ("AckedState", state.acked, "Acknowledged", "Unacknowledged"),
            ("ConfirmedState", state.confirmed, "Confirmed", "Unconfirmed"),
        ):
            fields[name] = ua.LocalizedText(yes if on else no)
            fields[f"{name}/Id"] = on
        if d.kind == "limit" and d.limits is not None:
            fields["LimitState/CurrentState"] = ua.LocalizedText(LIMIT_STATES.get(state.limit or "", ""))
            for limit_name, limit in d.limits.limits():
                part = LIMIT_STATES[limit_name]
                fields[f"{part}Limit"] = limit.limit
                fields[f"Severity{part}"] = limit.severity
        return fields

    # -- the methods: a status for every outcome ---------------------------------------------

    async def _refresh(self, count: int, parent: ua.NodeId, *args: ua.Variant) -> Any:
        """ConditionRefresh (SubscriptionId) and ConditionRefresh2 (and a MonitoredItemId): asyncua's
        own once the arguments are there and are numbers (a client gets a status, not a fault)."""
        if (wrong := _arity(args, count)) is not None:
            return wrong
        if any(isinstance(a.Value, bool) or not isinstance(a.Value, int) for a in args):
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        return await self.server.iserver.subscription_service.condition_refresh(parent, *args)

    async def _acknowledge(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        return self._answer(parent, args, 2, "alarm_ack", lambda a, u, c: self.book.acknowledge(a, u, c))

    async def _confirm(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        return self._answer(parent, args, 2, "alarm_confirm", lambda a, u, c: self.book.confirm(a, u, c))

    async def _comment(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        return self._answer(parent, args, 2, "alarm_comment", lambda a, u, c: self.book.add_comment(a, u, c))

    async def _enable(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        return self._answer(parent, args, 0, "alarm_enable", lambda a, u, _: self.book.enable(a, u))

    async def _disable(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        return self._answer(parent, args, 0, "alarm_disable", lambda a, u, _: self.book.disable(a, u))

    async def _unshelve(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        return self._answer(parent, args, 0, "alarm_unshelve", lambda a, u, _: self.book.unshelve(a, u))

    async def _oneshot(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        return self._answer(parent, args, 0, "alarm_shelve", lambda a, u, _: self.book.shelve(a, u, None))

    async def _timed(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        if len(args) == 1 and (isinstance(args[0].Value, bool) or not isinstance(args[0].Value, int | float)):
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)  # a Duration in ms, not a flag
        seconds = float(args[0].Value) / 1000 if len(args) == 1 else 0.0
        return self._answer(parent, args, 1, "alarm_shelve", lambda a, u, _: self.book.shelve(a, u, seconds))

    def _answer(
        self, parent: ua.NodeId, args: tuple[ua.Variant, ...], count: int, event: str,
        do: Callable[[str, str, str], AlarmState],
    ) -> ua.StatusCode:  # fmt: skip
        """Acknowledge and Confirm take (EventId, Comment); TimedShelve (ShelvingTime ms); the others none."""
        alarm_id = self._alarm_of.get(parent)
        if alarm_id is None:
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        if (wrong := _arity(args, count)) is not None:
            return wrong
        comment = ""
        if count == 2:  # EventId, Comment
            event_id, text = args[0].Value, args[1].Value
            comment = (text.Text or "") if isinstance(text, ua.LocalizedText) else str(text or "")
            if not isinstance(event_id, bytes) or event_id not in self._nodes[alarm_id].event_ids:
                self._audit(event, f"refused {alarm_id}: unknown EventId")
                return ua.StatusCode(ua.StatusCodes.BadEventIdUnknown)
        user = current_user.get()
        name = (user.name or "") if user is not None else "anonymous"
        try:
            do(alarm_id, name, comment[:256])
        except AlarmRefused as exc:
            self._audit(event, f"refused {alarm_id}: {exc.refusal}")
            return ua.StatusCode(STATUS[exc.refusal])
        self._audit(event, f"ok {alarm_id}" + (f": {comment[:256]}" if comment else ""))
        return ua.StatusCode(ua.StatusCodes.Good)


def _arity(args: tuple[ua.Variant, ...], count: int) -> ua.StatusCode | None:
    """The status for a call with other than `count` arguments, None when it has them."""
    if len(args) == count:
        return None
    codes = ua.StatusCodes
    return ua.StatusCode(codes.BadArgumentsMissing if len(args) < count else codes.BadTooManyArguments)


def _ms_until(at: float | None) -> float:
    return 0.0 if at is None else max(0.0, at - datetime.now(UTC).timestamp()) * 1000


def _time_left(unshelve_at: float | None) -> Callable[[ua.NodeId, ua.AttributeIds], ua.DataValue]:
    """UnshelveTime counts down (the ms until a timed shelve ends): a value written at the change
    would read the same an hour later, so each Read computes it."""

    def value(nodeid: ua.NodeId, attr: ua.AttributeIds) -> ua.DataValue:
        now = datetime.now(UTC)
        variant = ua.Variant(_ms_until(unshelve_at), ua.VariantType.Double)
        return ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)

    return value


async def _add_object(parent: Node, nodeid: ua.NodeId, name: ua.QualifiedName, typedef: int) -> Node:
    """An object of a standard type without instantiating the type's members (a condition's state is
    in its events; dozens of conditions would otherwise add thousands of nodes to start-up)."""
    attrs = ua.ObjectAttributes(DisplayName=ua.LocalizedText(name.Name), EventNotifier=0)
    attrs.SpecifiedAttributes = ua.NodeAttributesMask.DisplayName | ua.NodeAttributesMask.EventNotifier
    item = ua.AddNodesItem(
        ParentNodeId=parent.nodeid, ReferenceTypeId=ua.NodeId(IDS.HasComponent),
        RequestedNewNodeId=nodeid, BrowseName=name, NodeClass=ua.NodeClass.Object, NodeAttributes=attrs,
        TypeDefinition=ua.NodeId(typedef),
    )  # fmt: skip
    (result,) = await parent.session.add_nodes([item])
    result.StatusCode.check()
    return Node(parent.session, result.AddedNodeId)
