"""Client writes to station setpoints go to the PLC first, and into the address space only after.

asyncua would store a written value in the node and nothing more; a setpoint must instead pass the
mapping's checks, reach the PLC and read back equal before the node (and the client) sees it. So
this server's attribute service `write` is wrapped: writes of a setpoint's Value are handled here,
every other write goes on to asyncua unchanged. Each attempt, of either kind, is audited, and a PLC that holds
something other than what was written raises a station event. Reads of a setpoint's
UserAccessLevel are answered for the reading user, so a client shows it writable to engineers only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from asyncua import Server, ua

from bridge.errors import CodecError, ParameterMismatch, StationError
from bridge.mapping.fields import RegisterField
from bridge.opcua.uatypes import INTEGER_VARIANTS, NUMBER_VARIANTS, field_variant
from bridge.security.rules import current_user
from bridge.security.users import at_least

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Setpoint:
    station: str
    name: str
    field: RegisterField
    enum_codes: dict[str, int] | None = None  # enum name → the Int32 code clients see

    @property
    def label(self) -> str:
        return f"{self.station}.{self.name}"


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)


def value_of(setpoint: Setpoint, variant: ua.Variant | None) -> Any:
    """The mapping value a client's Variant stands for (Refused with BadTypeMismatch if none).

    Numbers are taken from any numeric Variant (scripts write Double where the node is Float);
    the range and the register's type are the codec's to check.
    """
    f = setpoint.field
    vtype = variant.VariantType if variant is not None else None
    if variant is None or variant.Value is None or variant.is_array:
        raise Refused(ua.StatusCodes.BadTypeMismatch, "a scalar value is required")
    value = variant.Value
    if f.type == "bool":
        if vtype != ua.VariantType.Boolean:
            raise Refused(ua.StatusCodes.BadTypeMismatch, f"Boolean required, got {vtype.name}")
        return value
    if f.type == "string":
        if vtype != ua.VariantType.String:
            raise Refused(ua.StatusCodes.BadTypeMismatch, f"String required, got {vtype.name}")
        return value
    if f.type == "enum":
        assert setpoint.enum_codes is not None
        if vtype not in INTEGER_VARIANTS:
            raise Refused(ua.StatusCodes.BadTypeMismatch, f"an enumeration code required, got {vtype.name}")
        names = {code: name for name, code in setpoint.enum_codes.items()}
        if value not in names:
            raise Refused(
                ua.StatusCodes.BadOutOfRange, f"{value} is not one of {', '.join(map(str, sorted(names)))}"
            )
        return names[value]
    if vtype not in NUMBER_VARIANTS:
        raise Refused(ua.StatusCodes.BadTypeMismatch, f"a number required, got {vtype.name}")
    if field_variant(f) in INTEGER_VARIANTS:  # an unscaled integer register: the node is an integer too
        if isinstance(value, float) and not value.is_integer():
            raise Refused(ua.StatusCodes.BadTypeMismatch, f"a whole number required, got {value}")
        return int(value)
    return value


_ATTRIBUTES = {a.value for a in ua.AttributeIds}
WriteSetpoint = Callable[[str, str, Any], Awaitable[None]]
Audit = Callable[[str, str], None]  # event, outcome (the face adds the user)
Show = Callable[[Setpoint, Any], Awaitable[None]]
Mismatch = Callable[[Setpoint, str], Awaitable[None]]


class SetpointAccess:
    def __init__(
        self,
        server: Server,
        setpoints: dict[ua.NodeId, Setpoint],
        write: WriteSetpoint,
        show: Show,
        audit: Audit,
        mismatch: Mismatch,
    ) -> None:
        self._setpoints = setpoints
        self._write = write
        self._show = show
        self._audit = audit
        self._mismatch = mismatch
        self._aspace = server.iserver.aspace
        service = server.iserver.attribute_service
        self._forward = service.write
        self._read = service.read
        service.write = self.write  # type: ignore[method-assign]
        service.read = self.read  # type: ignore[method-assign]

    def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        results = self._read(params)
        user = current_user.get()  # set for this request by the role check (with --security)
        role = getattr(user, "lb_role", None)
        if role is None or at_least(role, "engineer"):
            return results
        for i, item in enumerate(params.NodesToRead or []):
            if item.AttributeId == ua.AttributeIds.UserAccessLevel and item.NodeId in self._setpoints:
                read_only = ua.Variant(ua.AccessLevel.CurrentRead.mask, ua.VariantType.Byte)
                results[i] = dataclasses.replace(results[i], Value=read_only)
        return results

    async def write(self, params: ua.WriteParameters, user: Any = None) -> list[ua.StatusCode]:
        items = list(params.NodesToWrite or [])
        results: list[ua.StatusCode | None] = [None] * len(items)
        others: list[int] = []
        for i, item in enumerate(items):
            setpoint = self._setpoints.get(item.NodeId)
            if item.NodeId not in self._aspace:  # asyncua would say BadUserAccessDenied to non-admins
                results[i] = ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
            elif setpoint is None or item.AttributeId != ua.AttributeIds.Value:
                others.append(i)
            else:
                results[i] = await self._write_one(setpoint, item.Value, user)
        if others:
            forwarded = ua.WriteParameters(NodesToWrite=[items[i] for i in others])
            rest = await (self._forward(forwarded, user) if user is not None else self._forward(forwarded))
            for i, code in zip(others, rest, strict=True):
                results[i] = code
        answers = [code or ua.StatusCode(ua.StatusCodes.BadInternalError) for code in results]
        clients = getattr(user, "lb_role", None) is not None  # not the server's own writes
        for item, code in zip(items, answers, strict=True) if clients else ():
            if item.NodeId not in self._setpoints or item.AttributeId != ua.AttributeIds.Value:
                attribute = ua.AttributeIds(item.AttributeId).name if item.AttributeId in _ATTRIBUTES else "?"
                outcome = "ok" if code.is_good() else f"refused ({code.name})"
                self._audit("write", f"{outcome} {item.NodeId.to_string()} {attribute}")
        return answers

    async def _write_one(self, setpoint: Setpoint, data: ua.DataValue | None, user: Any) -> ua.StatusCode:
        role = getattr(user, "lb_role", None)
        try:
            if role is not None and not at_least(role, "engineer"):  # the ruleset refused it already
                raise Refused(ua.StatusCodes.BadUserAccessDenied, f"role {role} may not write setpoints")
            value = value_of(setpoint, data.Value if data is not None else None)
            try:
                await self._write(setpoint.station, setpoint.name, value)
            except CodecError as exc:
                raise Refused(ua.StatusCodes.BadOutOfRange, str(exc)) from None
            except ParameterMismatch as exc:
                await self._mismatch(setpoint, str(exc))
                raise Refused(ua.StatusCodes.BadDeviceFailure, str(exc)) from None
            except StationError as exc:
                raise Refused(ua.StatusCodes.BadCommunicationError, str(exc)) from None
        except Refused as exc:
            log.warning(
                "setpoint_refused", station=setpoint.station, setpoint=setpoint.name, reason=exc.reason
            )
            self._audit("setpoint_write", f"refused {setpoint.label}: {exc.reason}")
            return ua.StatusCode(exc.code)
        await self._show(setpoint, value)
        self._audit("setpoint_write", f"ok {setpoint.label}={value!r}")
        return ua.StatusCode(ua.StatusCodes.Good)
