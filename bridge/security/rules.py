"""Which role may do what, checked on every request before asyncua handles it.

observer: browse, read, subscribe, history, ConditionRefresh · operator: also submit and cancel
orders, acknowledge, confirm and shelve alarms ·
engineer: also write station setpoints (bridge/opcua/setpoints.py), reload the mapping and clear
a station held for a handshake error ·
admin: also change the
address space. A refused request is answered BadUserAccessDenied and changes nothing.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.crypto.permission_rules import ADMIN_TYPES, USER_TYPES, PermissionRuleset
from asyncua.ua.ua_binary import struct_from_binary

from bridge.security.pki import AuditHook
from bridge.security.users import RoleUser, at_least

# The user of the request being handled (set here, read by the methods for the audit trail).
current_user: contextvars.ContextVar[RoleUser | None] = contextvars.ContextVar("current_user", default=None)


@dataclass(frozen=True)
class Channel:
    """The secure channel a request came on, as the audit trail records it."""

    policy: str  # Basic256Sha256, None, …
    mode: str  # Sign, SignAndEncrypt, None_
    client: str  # address:port

    def __str__(self) -> str:
        return f"{self.policy}/{self.mode} {self.client}"


# The channel of the request being handled (set by the channel guard, or by tag_channels without it).
current_channel: contextvars.ContextVar[Channel | None] = contextvars.ContextVar(
    "current_channel", default=None
)

_CALL = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
_WRITE = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)
_READ_ONLY = {ua.NodeId(t) for t in USER_TYPES} - {_CALL, _WRITE}
_ADMIN = {ua.NodeId(t) for t in ADMIN_TYPES}
ORDER_METHODS = ("SubmitOrder", "CancelOrder")
# Part 9 methods that change an alarm (Acknowledge, Confirm, AddComment, Enable, Disable, the
# shelving ones of ShelvedStateMachineType and of AlarmConditionType's ShelvingState): operators
ALARM_METHODS = {
    str(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge),
    str(ua.ObjectIds.AcknowledgeableConditionType_Confirm),
    str(ua.ObjectIds.ConditionType_AddComment),
    str(ua.ObjectIds.ConditionType_Enable),
    str(ua.ObjectIds.ConditionType_Disable),
    str(ua.ObjectIds.ShelvedStateMachineType_Unshelve),
    str(ua.ObjectIds.ShelvedStateMachineType_OneShotShelve),
    str(ua.ObjectIds.ShelvedStateMachineType_TimedShelve),
    str(ua.ObjectIds.AlarmConditionType_ShelvingState_Unshelve),
    str(ua.ObjectIds.AlarmConditionType_ShelvingState_OneShotShelve),
    str(ua.ObjectIds.AlarmConditionType_ShelvingState_TimedShelve),
}


class RoleRuleset(PermissionRuleset):
    """`audit(event, user, thumbprint, outcome)` is told of every refusal."""

    def __init__(self, audit: AuditHook | None = None) -> None:
        self._audit = audit

    def check_validity(self, user: Any, action_type: ua.NodeId, body: Buffer) -> bool:
        role = getattr(user, "lb_role", None)
        current_user.set(user if isinstance(user, RoleUser) else None)
        allowed, what = self._decide(role, action_type, body)
        if not allowed and self._audit is not None:
            name = getattr(user, "name", None) or "anonymous"
            self._audit("denied", name, getattr(user, "thumbprint", ""), f"refused: {what} (role {role})")
        return allowed

    def _decide(self, role: str | None, action_type: ua.NodeId, body: Buffer) -> tuple[bool, str]:
        service = ua.ObjectIdNames.get(action_type.Identifier, str(action_type)).removesuffix(
            "Request_Encoding_DefaultBinary"
        )
        if role is None:
            return False, service
        if action_type in _READ_ONLY:
            return True, service
        if action_type == _CALL:
            methods = [method.MethodId for method in self._calls(body)]
            refused = [str(m.Identifier).rsplit(".", 1)[-1] for m in methods if not self._may_call(role, m)]
            return not refused, f"Call {', '.join(refused)}"
        if action_type == _WRITE:
            return at_least(role, "engineer"), service
        if action_type in _ADMIN:
            return role == "admin", service
        return False, service

    @staticmethod
    def _calls(body: Buffer) -> list[ua.CallMethodRequest]:
        params = struct_from_binary(ua.CallParameters, body.copy())  # a copy: asyncua parses it again
        return list(params.MethodsToCall or [])

    @staticmethod
    def _may_call(role: str, method: ua.NodeId) -> bool:
        name = str(method.Identifier).rsplit(".", 1)[-1]
        if name.startswith(ORDER_METHODS) or (method.NamespaceIndex == 0 and name in ALARM_METHODS):
            return at_least(role, "operator")
        if name in ("ReloadMapping", "ClearStationError"):
            return at_least(role, "engineer")
        return True  # standard methods (ConditionRefresh, GetMonitoredItems…) only read
