"""The line's methods: SubmitOrder (JSON options), one typed SubmitOrder_<product>, CancelOrder,
ReloadMapping, ClearStationError.

Every refusal is an answer, never an exception: a status code the client can act on, the
offending argument marked in InputArgumentResults with the reason in its diagnostic, plus an
event and a log line. Nothing reaches a PLC for a refused call: the engine validates first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from asyncua import Node, ua

from bridge.errors import JournalUnavailable, OrderFinished, OrderRejected, TryLater, UnknownOrder
from bridge.limits import LOGGED_TEXT_CHARS, OPTIONS_JSON_CHARS, OPTIONS_JSON_DEPTH, clip, nesting_depth
from bridge.mapping.model import LineMapping
from bridge.opcua import names
from bridge.opcua.line_calls import LineCalls
from bridge.opcua.uatypes import INTEGER_VARIANTS, ModelTypes, option_variant

log = structlog.get_logger(__name__)

MethodResult = ua.CallMethodResult


@dataclass(frozen=True)
class Arg:
    name: str
    vtype: ua.VariantType
    description: str = ""
    datatype: ua.NodeId | None = None

    def argument(self) -> ua.Argument:
        return ua.Argument(
            Name=self.name,
            DataType=self.datatype or ua.NodeId(self.vtype.value),
            ValueRank=ua.ValueRank.Scalar,
            Description=ua.LocalizedText(self.description),
        )


JSON_ARGS = [
    Arg("OrderId", ua.VariantType.String, "1-32 letters, digits, '-' or '_'"),
    Arg("Product", ua.VariantType.String, "a product of the mapping, e.g. AC-W"),
    Arg("Options", ua.VariantType.String, 'JSON object of options; may hold "quantity" and "priority"'),
]
CANCEL_ARGS = [Arg("OrderId", ua.VariantType.String, "the order to cancel")]
CLEAR_ARGS = [
    Arg("Station", ua.VariantType.String, "the station to let work again"),
    Arg("Decision", ua.VariantType.String,
        "for a step its PLC lost in a restart: rerun (run it again) or fail (fault the unit); else empty"),
]  # fmt: skip


def typed_args(mapping: LineMapping, types: ModelTypes, product_id: str) -> list[Arg]:
    product = mapping.products[product_id]
    args = [
        Arg("OrderId", ua.VariantType.String, "1-32 letters, digits, '-' or '_'"),
        Arg("Quantity", ua.VariantType.UInt32, f"units, {product.quantity.min} to {product.quantity.max}"),
    ]
    for name, option in product.options.items():
        default = "" if option.default is None else f" (default {option.default!r})"
        args.append(
            Arg(
                name,
                option_variant(option),
                f"{option.description or name}{default}",
                types.option_enums.get((product_id, name)),
            )
        )
    return args


def refused(code: int, index: int | None, count: int, reason: str) -> MethodResult:
    result = ua.CallMethodResult()
    result.StatusCode = ua.StatusCode(code)
    result.InputArgumentResults = [ua.StatusCode() for _ in range(count)]
    result.InputArgumentDiagnosticInfos = [ua.DiagnosticInfo() for _ in range(count)]
    if index is not None and index < count:
        result.InputArgumentResults[index] = ua.StatusCode(code)
        result.InputArgumentDiagnosticInfos[index] = ua.DiagnosticInfo(AdditionalInfo=reason)
    return result


def check_arguments(args: tuple[ua.Variant, ...], spec: list[Arg]) -> MethodResult | None:
    """A refusal if the call's arguments do not match the method's declaration."""
    if len(args) < len(spec):
        return refused(ua.StatusCodes.BadArgumentsMissing, None, len(args), "arguments missing")
    if len(args) > len(spec):
        return refused(ua.StatusCodes.BadTooManyArguments, None, len(args), "too many arguments")
    for i, (arg, want) in enumerate(zip(args, spec, strict=True)):
        if arg.is_array or isinstance(arg.Value, list):
            reason = f"{want.name}: expected one {want.vtype.name}, got an array"
            return refused(ua.StatusCodes.BadTypeMismatch, i, len(args), reason)
        ok = arg.VariantType == want.vtype or (
            want.vtype in INTEGER_VARIANTS
            and arg.VariantType in INTEGER_VARIANTS
            and isinstance(arg.Value, int)
        )
        if not ok:
            reason = f"{want.name}: expected {want.vtype.name}, got {arg.VariantType.name}"
            return refused(ua.StatusCodes.BadTypeMismatch, i, len(args), reason)
    return None


class LineMethods:
    """The line's method nodes: each call's arguments checked here, the call itself made to
    `calls` (line_calls.LineCalls), every refusal turned into an answer."""

    def __init__(self, mapping: LineMapping, types: ModelTypes, calls: LineCalls) -> None:
        self.mapping = mapping
        self.types = types
        self.calls = calls
        self._typed_specs = {p: typed_args(mapping, types, p) for p in mapping.products}

    async def add_to(self, line: Node, ns: int) -> None:
        base = line.nodeid.Identifier
        out = [
            ua.Argument(
                Name="OrderNode",
                DataType=ua.NodeId(ua.ObjectIds.NodeId),
                ValueRank=-1,
                Description=ua.LocalizedText("NodeId of the order under Orders"),
            )
        ]
        await line.add_method(
            ua.NodeId(f"{base}.{names.SUBMIT_ORDER}", ns),
            ua.QualifiedName(names.SUBMIT_ORDER, ns),
            self.submit_json,
            [a.argument() for a in JSON_ARGS],
            out,
        )
        await line.add_method(
            ua.NodeId(f"{base}.{names.CANCEL_ORDER}", ns),
            ua.QualifiedName(names.CANCEL_ORDER, ns),
            self.cancel,
            [a.argument() for a in CANCEL_ARGS],
            [],
        )
        report = ua.Argument(
            Name="Report",
            DataType=ua.NodeId(ua.ObjectIds.String),
            ValueRank=ua.ValueRank.OneDimension,
            ArrayDimensions=[0],
            Description=ua.LocalizedText("the paths that changed; if refused, every reason"),
        )
        await line.add_method(
            ua.NodeId(f"{base}.{names.RELOAD_MAPPING}", ns),
            ua.QualifiedName(names.RELOAD_MAPPING, ns),
            self.reload_mapping,
            [],
            [report],
        )
        await line.add_method(
            ua.NodeId(f"{base}.{names.CLEAR_STATION_ERROR}", ns),
            ua.QualifiedName(names.CLEAR_STATION_ERROR, ns),
            self.clear_station_error,
            [a.argument() for a in CLEAR_ARGS],
            [
                ua.Argument(
                    Name="Report",
                    DataType=ua.NodeId(ua.ObjectIds.String),
                    ValueRank=ua.ValueRank.Scalar,
                    Description=ua.LocalizedText("why the station was held, or why it cannot be cleared"),
                )
            ],
        )
        for product_id in self.mapping.products:
            name = f"{names.SUBMIT_TYPED_PREFIX}{product_id}"
            spec = self._typed_specs[product_id]

            async def typed(
                parent: ua.NodeId, *args: ua.Variant, product_id: str = product_id
            ) -> MethodResult:
                return await self.submit_typed(product_id, args)

            await line.add_method(
                ua.NodeId(f"{base}.{name}", ns),
                ua.QualifiedName(name, ns),
                typed,
                [a.argument() for a in spec],
                out,
            )

    async def submit_json(self, parent: ua.NodeId, *args: ua.Variant) -> MethodResult:
        bad = check_arguments(args, JSON_ARGS)
        if bad is not None:
            return bad
        order_id, product, options_text = (a.Value for a in args)
        try:
            options = parse_options(options_text or "{}")
        except OrderRejected as exc:
            return await self._refuse(order_id, exc, 3)
        quantity = options.pop("quantity", None)
        priority = options.pop("priority", 0)
        return await self._accept(order_id, product, options, quantity, priority, arg_of=_json_arg, count=3)

    async def submit_typed(self, product_id: str, args: tuple[ua.Variant, ...]) -> MethodResult:
        spec = self._typed_specs[product_id]
        bad = check_arguments(args, spec)
        if bad is not None:
            return bad
        values = [a.Value for a in args]
        options: dict[str, Any] = {}
        for arg, value in zip(spec[2:], values[2:], strict=True):
            if arg.datatype is not None:  # an enumeration: the wire carries its code
                by_code = {code: v for v, code in self.types.enum_codes[arg.datatype].items()}
                options[arg.name] = by_code.get(value, value)
            else:
                options[arg.name] = value
        names = [a.name for a in spec]

        def arg_of(field: str) -> int | None:
            key = {"order_id": "OrderId", "quantity": "Quantity"}.get(field, field.removeprefix("options."))
            return names.index(key) if key in names else None

        return await self._accept(
            values[0], product_id, options, values[1], 0, arg_of=arg_of, count=len(spec)
        )

    async def cancel(self, parent: ua.NodeId, *args: ua.Variant) -> MethodResult | ua.StatusCode:
        bad = check_arguments(args, CANCEL_ARGS)
        if bad is not None:
            return bad
        order_id = args[0].Value
        try:
            await self.calls.cancel(order_id)
        except JournalUnavailable as exc:
            return refused(ua.StatusCodes.BadResourceUnavailable, 0, 1, str(exc))
        except (UnknownOrder, OrderFinished) as exc:
            log.info("cancel_refused", order_id=clip(str(order_id), LOGGED_TEXT_CHARS), reason=exc.reason)
            unknown = isinstance(exc, UnknownOrder)
            code = ua.StatusCodes.BadNotFound if unknown else ua.StatusCodes.BadInvalidState
            return refused(code, 0, 1, str(exc))
        return ua.StatusCode()

    async def reload_mapping(self, parent: ua.NodeId, *args: ua.Variant) -> MethodResult:
        """Status Good and the changed paths, or a Bad status with every reason (in the output too:
        a refusal the engineer cannot read is no help)."""
        if args:
            return refused(ua.StatusCodes.BadTooManyArguments, None, len(args), "takes no arguments")
        code, report = await self.calls.reload()
        result = ua.CallMethodResult()
        result.StatusCode = ua.StatusCode(code)
        result.OutputArguments = [ua.Variant(report, ua.VariantType.String)]
        return result

    async def clear_station_error(self, parent: ua.NodeId, *args: ua.Variant) -> MethodResult:
        """Let a station held for a handshake it could not trust work again (engineer)."""
        bad = check_arguments(args, CLEAR_ARGS[: 1 if len(args) == 1 else 2])  # Decision may be left out
        if bad is not None:
            return bad
        decision = (args[1].Value or "") if len(args) > 1 else ""
        code, report = await self.calls.clear_station(args[0].Value or "", decision)
        result = refused(code, 0, 1, report) if code else ua.CallMethodResult()
        result.OutputArguments = [ua.Variant(report, ua.VariantType.String)]
        return result

    async def _accept(
        self,
        order_id: Any,
        product: Any,
        options: Any,
        quantity: Any,
        priority: Any,
        *,
        arg_of: Callable[[str], int | None],
        count: int,
    ) -> MethodResult:
        try:
            order = await self.calls.submit(order_id, product, options, quantity, priority)
        except TryLater as exc:  # a full journal or a full line: not the caller's fault, not for ever
            self.calls.refused_for_now(str(order_id), exc)
            return refused(ua.StatusCodes.BadResourceUnavailable, 0, count, str(exc))
        except OrderRejected as exc:
            result = refused(ua.StatusCodes.BadInvalidArgument, arg_of(exc.field), count, str(exc))
            await self.calls.rejected(str(order_id), exc)
            return result
        result = ua.CallMethodResult()
        result.OutputArguments = [ua.Variant(await self.calls.node_of(order), ua.VariantType.NodeId)]
        return result

    async def _refuse(self, order_id: Any, exc: OrderRejected, count: int) -> MethodResult:
        await self.calls.rejected(str(order_id), exc)
        return refused(ua.StatusCodes.BadInvalidArgument, _json_arg(exc.field), count, str(exc))


def parse_options(text: str) -> dict[str, Any]:
    """SubmitOrder's Options argument as a dict, or OrderRejected saying why not (size, depth,
    syntax, shape), without ever recursing as deep as a client's nesting."""
    if len(text) > OPTIONS_JSON_CHARS:
        raise OrderRejected(f"longer than {OPTIONS_JSON_CHARS} characters ({len(text)})", field="options")
    if nesting_depth(text) > OPTIONS_JSON_DEPTH:
        raise OrderRejected(f"nested deeper than {OPTIONS_JSON_DEPTH} levels", field="options")
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise OrderRejected(f"not valid JSON: {exc}", field="options") from None
    if not isinstance(options, dict):
        raise OrderRejected("must be a JSON object", field="options")
    return options


def _json_arg(field: str) -> int | None:
    if field == "order_id":
        return 0
    if field == "product":
        return 1
    return 2  # options.*, quantity, priority all come in the Options argument
