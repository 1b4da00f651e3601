"""The state variables of a condition object, kept equal to the fields of its last event.

Part 9 lets a server show conditions in the address space; one that does gives them their type's
mandatory members. A client that browses to an alarm and reads it (an HMI's tag, a compliance
check), rather than subscribing to events, then finds where the alarm stands: ActiveState/Id,
AckedState, EnabledState, Severity, Retain and the rest, each named as the event field it mirrors
("ActiveState/Id" is the Id property of the ActiveState variable).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from bridge.domain.alarm_condition import AlarmState, Shelving

IDS = ua.ObjectIds
VT = ua.VariantType

# Member: (reference from its parent, type definition, DataType, how its value travels)
Member = tuple[int, int, int, ua.VariantType]


def _property(datatype: int, vtype: ua.VariantType) -> Member:
    return IDS.HasProperty, IDS.PropertyType, datatype, vtype


def _two_state(name: str) -> dict[str, Member]:
    return {
        name: (IDS.HasComponent, IDS.TwoStateVariableType, IDS.LocalizedText, VT.LocalizedText),
        f"{name}/Id": _property(IDS.Boolean, VT.Boolean),
    }


def _condition_variable(name: str, datatype: int, vtype: ua.VariantType) -> dict[str, Member]:
    return {
        name: (IDS.HasComponent, IDS.ConditionVariableType, datatype, vtype),
        f"{name}/SourceTimestamp": _property(IDS.UtcTime, VT.DateTime),
    }


def _state_machine(name: str) -> dict[str, Member]:
    return {
        f"{name}/CurrentState": (
            IDS.HasComponent, IDS.FiniteStateVariableType, IDS.LocalizedText, VT.LocalizedText
        ),
        f"{name}/CurrentState/Id": _property(IDS.NodeId, VT.NodeId),
    }  # fmt: skip


MEMBERS: dict[str, Member] = {  # every alarm condition's (AlarmConditionType and what it inherits)
    "EventId": _property(IDS.ByteString, VT.ByteString),
    "EventType": _property(IDS.NodeId, VT.NodeId),
    "SourceNode": _property(IDS.NodeId, VT.NodeId),
    "SourceName": _property(IDS.String, VT.String),
    "Time": _property(IDS.UtcTime, VT.DateTime),
    "ReceiveTime": _property(IDS.UtcTime, VT.DateTime),
    "Message": _property(IDS.LocalizedText, VT.LocalizedText),
    "Severity": _property(IDS.UInt16, VT.UInt16),
    "ConditionClassId": _property(IDS.NodeId, VT.NodeId),
    "ConditionClassName": _property(IDS.LocalizedText, VT.LocalizedText),
    "ConditionName": _property(IDS.String, VT.String),
    "BranchId": _property(IDS.NodeId, VT.NodeId),
    "Retain": _property(IDS.Boolean, VT.Boolean),
    "ClientUserId": _property(IDS.String, VT.String),
    **_two_state("EnabledState"),
    **_condition_variable("Quality", IDS.StatusCode, VT.StatusCode),
    **_condition_variable("LastSeverity", IDS.UInt16, VT.UInt16),
    **_condition_variable("Comment", IDS.LocalizedText, VT.LocalizedText),
    **_two_state("AckedState"),
    **_two_state("ConfirmedState"),
    **_two_state("ActiveState"),
    "InputNode": _property(IDS.NodeId, VT.NodeId),
    "SuppressedOrShelved": _property(IDS.Boolean, VT.Boolean),
    "MaxTimeShelved": _property(IDS.Duration, VT.Double),
    **_state_machine("ShelvingState"),
    "ShelvingState/UnshelveTime": _property(IDS.Duration, VT.Double),
}
OFF_NORMAL: dict[str, Member] = {"NormalState": _property(IDS.NodeId, VT.NodeId)}
LIMIT_STATE = "LimitState"  # an object of its own (ExclusiveLimitStateMachineType) under a limit alarm

SHELVING_IDS = {
    Shelving.UNSHELVED: IDS.ShelvedStateMachineType_Unshelved,
    Shelving.TIMED: IDS.ShelvedStateMachineType_TimedShelved,
    Shelving.ONESHOT: IDS.ShelvedStateMachineType_OneShotShelved,
}
LIMIT_IDS = {
    "HighHigh": IDS.ExclusiveLimitStateMachineType_HighHigh,
    "High": IDS.ExclusiveLimitStateMachineType_High,
    "Low": IDS.ExclusiveLimitStateMachineType_Low,
    "LowLow": IDS.ExclusiveLimitStateMachineType_LowLow,
}


def members(kind: str, limits: Collection[str] = ()) -> dict[str, Member]:
    """The members a condition of this kind carries: a limit alarm its limit state and the
    limits it has (HighHigh, High, Low, LowLow), an off-normal one its NormalState."""
    found = dict(MEMBERS)
    if kind == "limit":
        found.update(_state_machine(LIMIT_STATE))
        found.update({f"{part}Limit": _property(IDS.Double, VT.Double) for part in limits})
    elif kind in ("offline", "plc_fault", "held"):
        found.update(OFF_NORMAL)
    return found


def member_id(condition: ua.NodeId, path: str) -> ua.NodeId:
    return ua.NodeId(f"{condition.Identifier}.{path.replace('/', '.')}", condition.NamespaceIndex)


def add_items(condition: ua.NodeId, found: Mapping[str, Member]) -> list[ua.AddNodesItem]:
    """The AddNodes items for a condition's members, each parent before its children (the
    ShelvingState object is there already; the LimitState object is made here)."""
    items = []
    if f"{LIMIT_STATE}/CurrentState" in found:
        attrs = ua.ObjectAttributes(DisplayName=ua.LocalizedText(LIMIT_STATE), EventNotifier=0)
        attrs.SpecifiedAttributes = ua.NodeAttributesMask.DisplayName | ua.NodeAttributesMask.EventNotifier
        items.append(ua.AddNodesItem(
            ParentNodeId=condition, ReferenceTypeId=ua.NodeId(IDS.HasComponent),
            RequestedNewNodeId=member_id(condition, LIMIT_STATE), BrowseName=ua.QualifiedName(LIMIT_STATE, 0),
            NodeClass=ua.NodeClass.Object, NodeAttributes=attrs,
            TypeDefinition=ua.NodeId(IDS.ExclusiveLimitStateMachineType),
        ))  # fmt: skip
    for path in sorted(found, key=lambda p: p.count("/")):
        reference, typedef, datatype, _ = found[path]
        parent, _, name = path.rpartition("/")
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(name), DataType=ua.NodeId(datatype), ValueRank=ua.ValueRank.Scalar,
            AccessLevel=ua.AccessLevel.CurrentRead.mask, UserAccessLevel=ua.AccessLevel.CurrentRead.mask,
            Value=ua.Variant(),
        )  # fmt: skip
        items.append(ua.AddNodesItem(
            ParentNodeId=member_id(condition, parent) if parent else condition,
            ReferenceTypeId=ua.NodeId(reference), RequestedNewNodeId=member_id(condition, path),
            BrowseName=ua.QualifiedName(name, 0), NodeClass=ua.NodeClass.Variable, NodeAttributes=attrs,
            TypeDefinition=ua.NodeId(typedef),
        ))  # fmt: skip
    return items


def derived(state: AlarmState, fields: Mapping[str, Any]) -> dict[str, Any]:
    """What the members hold beyond the event's own fields: the limit state's id, the condition
    variables' source timestamps, the off-normal condition's NormalState."""
    changed = datetime.fromtimestamp(state.changed_at, UTC)
    values = {
        "Quality/SourceTimestamp": changed,
        "LastSeverity/SourceTimestamp": changed,
        "Comment/SourceTimestamp": changed,
        "NormalState": ua.NodeId(),  # the normal state is "not active": no variable holds it
    }
    limit = fields.get(f"{LIMIT_STATE}/CurrentState")
    if limit is not None:
        state_id = LIMIT_IDS.get(limit.Text if isinstance(limit, ua.LocalizedText) else "")
        values[f"{LIMIT_STATE}/CurrentState/Id"] = ua.NodeId(state_id) if state_id else ua.NodeId()
    return values
