"""Which role may do what, checked on every request before asyncua handles it.

observer: browse, read, subscribe, history · operator: also submit and cancel orders ·
engineer: also write station setpoints (bridge/opcua/setpoints.py) and reload the mapping ·
admin: also change the
address space. A refused request is answered BadUserAccessDenied and changes nothing.
"""

from __future__ import annotations

import contextvars
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.crypto.permission_rules import ADMIN_TYPES, USER_TYPES, PermissionRuleset
from asyncua.ua.ua_binary import struct_from_binary

from bridge.security.users import RoleUser, at_least

# The user of the request being handled (set here, read by the methods for the audit trail).
current_user: contextvars.ContextVar[RoleUser | None] = contextvars.ContextVar("current_user", default=None)

_CALL = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
_WRITE = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)
_READ_ONLY = {ua.NodeId(t) for t in USER_TYPES} - {_CALL, _WRITE}
_ADMIN = {ua.NodeId(t) for t in ADMIN_TYPES}
ORDER_METHODS = ("SubmitOrder", "CancelOrder")


class RoleRuleset(PermissionRuleset):
    def check_validity(self, user: Any, action_type: ua.NodeId, body: Buffer) -> bool:
        role = getattr(user, "lb_role", None)
        current_user.set(user if isinstance(user, RoleUser) else None)
        if role is None:
            return False
        if action_type in _READ_ONLY:
            return True
        if action_type == _CALL:
            return all(self._may_call(role, method.MethodId) for method in self._calls(body))
        if action_type == _WRITE:
            return at_least(role, "engineer")
        if action_type in _ADMIN:
            return role == "admin"
        return False

    @staticmethod
    def _calls(body: Buffer) -> list[ua.CallMethodRequest]:
        params = struct_from_binary(ua.CallParameters, body.copy())  # a copy: asyncua parses it again
        return list(params.MethodsToCall or [])

    @staticmethod
    def _may_call(role: str, method: ua.NodeId) -> bool:
        name = str(method.Identifier).rsplit(".", 1)[-1]
        if name.startswith(ORDER_METHODS):
            return at_least(role, "operator")
        if name == "ReloadMapping":
            return at_least(role, "engineer")
        return True  # standard methods (ConditionRefresh, GetMonitoredItems…) only read
