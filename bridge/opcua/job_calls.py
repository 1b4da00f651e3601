"""What a Job Control method call carries in and answers (OPC 10031-4): its arguments checked,
each refusal as ReturnStatus bits with the argument and the reason, the outputs in the order the
specification lists them. Pure, beside the receiver and provider that use them (job_control.py)."""

from __future__ import annotations

from typing import Any

from asyncua import ua

from bridge.limits import LOGGED_TEXT_CHARS, clip
from bridge.opcua import isa95_jobs as jobs
from bridge.opcua.isa95_types import JOB_ORDER, structure
from bridge.opcua.methods import refused


class Refused(Exception):
    """A Job Control call that did not happen: its ReturnStatus bits, the argument and the reason."""

    def __init__(self, bits: int, reason: str, argument: int | None = 0) -> None:
        super().__init__(reason)
        self.bits, self.reason, self.argument = bits, reason, argument


def state_key(state: Any) -> tuple[tuple[str, ...], int]:
    """A job state as compared: the names along its BrowsePath (none for the top level), its number."""
    elements = state.BrowsePath.Elements if state.BrowsePath is not None else None
    return tuple(e.TargetName.Name for e in elements or []), int(state.StateNumber)


def request(args: tuple[ua.Variant, ...], ns: int) -> Any:
    """The order a Store/StoreAndStart/Update call asks for, or Refused/OrderRejected saying why."""
    if not args or not isinstance(args[0].Value, structure(JOB_ORDER, ns)):
        raise Refused(jobs.INVALID_REQUEST, "JobOrder: an ISA95JobOrderDataType is required")
    check_comment(args)
    return jobs.order_request(args[0].Value)


def job_id(args: tuple[ua.Variant, ...]) -> str:
    if not args or args[0].VariantType != ua.VariantType.String or not args[0].Value:
        raise Refused(jobs.INVALID_REQUEST, "JobOrderID: a non-empty String is required")
    check_comment(args)
    return str(args[0].Value)


def check_comment(args: tuple[ua.Variant, ...]) -> None:
    if len(args) > 2:
        raise Refused(jobs.INVALID_REQUEST, f"two arguments at most, got {len(args)}", None)
    if len(args) == 2 and args[1].Value is not None and args[1].VariantType != ua.VariantType.LocalizedText:
        raise Refused(jobs.INVALID_REQUEST, "Comment: LocalizedText[] or nothing", 1)


def comment(args: tuple[ua.Variant, ...]) -> str:
    """The caller's Comment, for the audit trail."""
    if len(args) < 2 or args[1].VariantType != ua.VariantType.LocalizedText:
        return ""
    texts = args[1].Value if isinstance(args[1].Value, list) else [args[1].Value]
    said = " / ".join(t.Text for t in texts if t is not None and t.Text)
    return f" (comment: {clip(said, LOGGED_TEXT_CHARS)})" if said else ""


def result(bits: int, count: int, argument: int | None = None, reason: str = "") -> ua.CallMethodResult:
    """Good, ReturnStatus `bits`, and the refused argument marked with the reason as any refused
    method call marks it (methods.refused), the call itself Good."""
    result = ua.CallMethodResult()
    if reason:
        result = refused(ua.StatusCodes.BadInvalidArgument, argument, count, reason)
        result.StatusCode = ua.StatusCode()
    result.OutputArguments = [ua.Variant(bits, ua.VariantType.UInt64)]
    return result


def with_outputs(result: ua.CallMethodResult, response: Any) -> ua.CallMethodResult:
    """The response provider's outputs: the response(s) first, then ReturnStatus."""
    value = ua.Variant(response, ua.VariantType.ExtensionObject, is_array=isinstance(response, list))
    result.OutputArguments = [value, *result.OutputArguments]
    return result
