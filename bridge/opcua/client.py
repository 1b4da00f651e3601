"""A small OPC UA client for the shell: submit, cancel, show and watch orders, and a health probe.

It finds the line by browsing Objects/Plant/Lines, so it needs nothing but the endpoint URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509

from bridge.domain.model import OrderState
from bridge.opcua.uatypes import APP_URI_PREFIX, NO_TIME, TYPES_URI

ORDER_STATES = list(OrderState)


class ClientError(Exception):
    """What the shell should print, with no traceback."""


@dataclass
class Line:
    client: Client
    node: Node
    ns: int
    types_ns: int

    @property
    def path(self) -> str:
        return str(self.node.nodeid.Identifier)

    def child(self, path: str) -> Node:
        return self.client.get_node(ua.NodeId(f"{self.path}.{path}", self.ns))


@dataclass(frozen=True)
class Credentials:
    """How the shell client logs in to a secured bridge (docs/security.md); all optional."""

    certificate: Path | None = None  # application instance certificate (DER) the bridge trusts
    private_key: Path | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials:
        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        return cls(
            path("LINEBRIDGE_CERTIFICATE"),
            path("LINEBRIDGE_PRIVATE_KEY"),
            env.get("LINEBRIDGE_USER") or None,
            env.get("LINEBRIDGE_PASSWORD"),
        )

    async def apply(self, client: Client) -> None:
        """Basic256Sha256 SignAndEncrypt with the certificate, and the user, where given."""
        if self.certificate is not None:
            if self.private_key is None:
                raise ClientError("LINEBRIDGE_CERTIFICATE needs LINEBRIDGE_PRIVATE_KEY")
            try:
                cert = x509.load_der_x509_certificate(self.certificate.read_bytes())
                names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                client.application_uri = names.get_values_for_type(x509.UniformResourceIdentifier)[0]
            except (ValueError, x509.ExtensionNotFound, IndexError) as exc:
                raise ClientError(
                    f"{self.certificate}: not a DER application certificate with an application URI ({exc})"
                ) from None
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                str(self.certificate),
                str(self.private_key),
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
        if self.user is not None:
            client.set_user(self.user)
            client.set_password(self.password or "")


    def explain(self, endpoint: str, exc: Exception) -> str:
        """What a failed connect means for someone at the shell, and what to do about it."""
        code = getattr(exc, "code", None)
        setup = (
            "set LINEBRIDGE_CERTIFICATE and LINEBRIDGE_PRIVATE_KEY (`linebridge pki client-certificate NAME`"
            " on the bridge's machine makes a pair it trusts) and LINEBRIDGE_USER / LINEBRIDGE_PASSWORD"
            " (docs/security.md)"
        )
        if "No matching endpoints" in str(exc) or (
            code == ua.StatusCodes.BadSecurityPolicyRejected and self.certificate is None
        ):
            return f"{endpoint} accepts secured connections only: {setup}"
        if code == ua.StatusCodes.BadIdentityTokenRejected or (
            code == ua.StatusCodes.BadUserAccessDenied and self.user is None
        ):
            return f"{endpoint} needs a user: set LINEBRIDGE_USER and LINEBRIDGE_PASSWORD"
        if code == ua.StatusCodes.BadUserAccessDenied:
            return (
                f"{endpoint} refused the login of user {self.user!r}: wrong user name or password, or too"
                " many failed logins from this address (wait, then try again; `linebridge audit` shows why)"
            )
        if code in (ua.StatusCodes.BadCertificateUntrusted, ua.StatusCodes.BadSecurityChecksFailed):
            return (
                f"{endpoint} does not trust this client's certificate ({self.certificate}) yet: on the"
                " bridge, `linebridge pki list` then `linebridge pki trust THUMBPRINT`"
            )
        return f"{endpoint}: {exc or type(exc).__name__}"


async def find_line(client: Client, name: str | None = None) -> Line:
    plant = None
    for child in await client.nodes.objects.get_children():
        if (await child.read_browse_name()).Name == "Plant":
            plant = child
            break
    if plant is None:
        raise ClientError("no Objects/Plant here: is this a linebridge server?")
    ns = plant.nodeid.NamespaceIndex
    lines = await (await plant.get_child([f"{ns}:Lines"])).get_children()
    by_name = {(await line.read_browse_name()).Name: line for line in lines}
    if not by_name:
        raise ClientError("the plant has no lines")
    if name is None:
        name = next(iter(by_name))
    if name not in by_name:
        raise ClientError(f"no line {name!r} (lines: {', '.join(by_name)})")
    return Line(client, by_name[name], ns, await client.get_namespace_index(TYPES_URI))


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pairs; values are JSON where they parse (18000, true), text otherwise."""
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ClientError(f"--option {pair!r}: expected name=value")
        options[name] = _parse_value(value)
    return options


async def call(line: Line, method: str, *args: ua.Variant) -> ua.CallMethodResult:
    request = ua.CallMethodRequest(
        ObjectId=line.node.nodeid,
        MethodId=ua.NodeId(f"{line.path}.{method}", line.ns),
        InputArguments=list(args),
    )
    (result,) = await line.client.uaclient.call([request])
    if not result.StatusCode.is_good():
        reasons = [d.AdditionalInfo for d in result.InputArgumentDiagnosticInfos or [] if d.AdditionalInfo]
        for out in result.OutputArguments or []:  # a refusal may list its reasons (ReloadMapping)
            if isinstance(out.Value, list):
                reasons += [str(v) for v in out.Value]
        name = result.StatusCode.name
        raise ClientError(f"{method} refused ({name})" + (f": {'; '.join(reasons)}" if reasons else ""))
    return result


async def submit(line: Line, order_id: str, product: str, options: dict[str, Any]) -> ua.NodeId:
    result = await call(
        line, "SubmitOrder", ua.Variant(order_id, ua.VariantType.String),
        ua.Variant(product, ua.VariantType.String), ua.Variant(json.dumps(options), ua.VariantType.String),
    )  # fmt: skip
    nodeid: ua.NodeId = result.OutputArguments[0].Value
    return nodeid


async def cancel(line: Line, order_id: str) -> None:
    await call(line, "CancelOrder", ua.Variant(order_id, ua.VariantType.String))


async def reload_mapping(line: Line) -> list[str]:
    """The paths the bridge took from its mapping file (ClientError with every reason if refused)."""
    result = await call(line, "ReloadMapping")
    return list(result.OutputArguments[0].Value or [])


async def clear_station_error(line: Line, station: str, decision: str = "") -> str:
    """Let a station held for a handshake error work again (`decision` for a step its PLC lost:
    rerun or fail); what was cleared."""
    result = await call(
        line, "ClearStationError", ua.Variant(station, ua.VariantType.String),
        ua.Variant(decision, ua.VariantType.String),
    )  # fmt: skip
    return str(result.OutputArguments[0].Value)


async def _order_node(line: Line, order_id: str) -> Node:
    order = line.child(f"Orders.{order_id}")
    try:
        await order.read_browse_name()
    except ua.UaStatusCodeError:
        raise ClientError(f"no order {order_id!r} in the address space (finished orders leave it)") from None
    return order


def _time_or_none(value: Any) -> Any:
    """A DateTime the server shows as MinDateTime (no time yet) as None; any other value as it is."""
    return None if isinstance(value, datetime) and value <= NO_TIME else value


async def _order_var(line: Line, order_id: str, name: str) -> Node:
    return await (await _order_node(line, order_id)).get_child([f"{line.types_ns}:{name}"])


async def show(line: Line, order_id: str) -> dict[str, Any]:
    order = await _order_node(line, order_id)
    info: dict[str, Any] = {"order_id": order_id}
    for name in ("State", "Product", "CurrentStation", "Progress", "Quantity", "FaultStation", "ResultCode",
                 "CreatedAt", "CompletedAt"):  # fmt: skip
        info[name] = _time_or_none(await (await order.get_child([f"{line.types_ns}:{name}"])).read_value())
    info["State"] = ORDER_STATES[info["State"]].value
    steps = []
    for step in await (await order.get_child([f"{line.types_ns}:Steps"])).get_children():
        values = {}
        for name in ("Station", "Unit", "Sequence", "StartedAt", "FinishedAt", "ResultCode", "Results"):
            variable = await step.get_child([f"{line.types_ns}:{name}"])
            values[name] = _time_or_none(await variable.read_value())
        steps.append(values)
    info["Steps"] = sorted(steps, key=lambda s: (s["Unit"], s["StartedAt"] or NO_TIME))  # route order
    return info


LISTED = ("State", "Product", "Progress", "Quantity", "CurrentStation", "FaultStation", "ResultCode",
          "WaitingFor")  # fmt: skip


async def list_orders(line: Line) -> list[dict[str, Any]]:
    """Every order in the address space (unfinished ones, and finished ones for their retention),
    oldest first: what `order list` prints. One Browse and one Read for all of them."""
    folder = line.child("Orders")
    refs = await folder.get_children_descriptions()
    ids = [ref.BrowseName.Name for ref in refs]
    nodes = [line.child(f"Orders.{order_id}.{name}") for order_id in ids for name in (*LISTED, "CreatedAt")]
    values = await line.client.read_values(nodes) if nodes else []
    width = len(LISTED) + 1
    orders = []
    for i, order_id in enumerate(ids):
        row = dict(zip((*LISTED, "CreatedAt"), values[i * width : (i + 1) * width], strict=True))
        row["State"] = ORDER_STATES[row["State"]].value
        orders.append({"order_id": order_id, **row})
    return sorted(orders, key=lambda o: (o["CreatedAt"] is None, o["CreatedAt"] or 0, o["order_id"]))




class _EventPrinter:
    def __init__(self, order_id: str | None, emit: Callable[[str], None]) -> None:
        self.order_id = order_id
        self.emit = emit
        self.finished = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        if self.order_id is not None and event.OrderId != self.order_id:
            return
        state = ORDER_STATES[event.NewState]
        where = f" at {event.Station}" if event.Station else ""
        code = f" (result code {event.ResultCode})" if event.ResultCode else ""
        text = event.Message.Text if event.Message is not None else ""
        why = f"  ({text.split(': ', 1)[1]})" if ": " in (text or "") else ""  # the engine's words, if any
        self.emit(f"{event.Time:%H:%M:%S.%f}"[:-3] + f"  {event.OrderId}  {state.value}{where}{code}{why}")
        if self.order_id is not None and state.is_final:
            self.finished.set()


async def watch(
    line: Line, order_id: str | None, emit: Callable[[str], None], timeout_s: float | None
) -> None:
    """Print order state changes as events arrive; with an order id, until that order finishes."""
    printer = _EventPrinter(order_id, emit)
    subscription = await line.client.create_subscription(50, printer)
    event_type = line.client.get_node(ua.NodeId("T.OrderStateChangedEventType", line.types_ns))
    await subscription.subscribe_events(line.node, event_type)
    if order_id is not None:  # subscribed first, so nothing falls between this read and the events
        info = await show(line, order_id)
        for text in replay_lines(info):  # what happened before this watch began
            emit(text)
        state = OrderState(info["State"])
        at = info["FaultStation"]
        fault = f" at {at} (result code {info['ResultCode']})" if at else ""
        emit(f"{order_id}  {state.value}{fault} (now)")
        if state.is_final:
            printer.finished.set()
    try:
        async with asyncio.timeout(timeout_s):
            await printer.finished.wait()
    finally:
        await subscription.delete()


def replay_lines(info: dict[str, Any]) -> list[str]:
    """An order's steps so far, in time order, as `order watch` prints them before its live events:
    a watch started after the submit does not miss the first stations."""
    happened: list[tuple[datetime, str]] = []
    if info["CreatedAt"] is not None:
        happened.append((info["CreatedAt"], "received"))
    for step in info["Steps"]:
        where = f"unit {step['Unit']} at {step['Station']}"
        if step["StartedAt"] is not None:
            happened.append((step["StartedAt"], f"{where}: step {step['Sequence']} began"))
        if step["FinishedAt"] is not None:
            happened.append((step["FinishedAt"], f"{where}: done, result code {step['ResultCode']}"))
    order_id = info["order_id"]
    return [f"{at:%H:%M:%S.%f}"[:-3] + f"  {order_id}  {what} (earlier)" for at, what in sorted(happened)]


def progress_lines(info: dict[str, Any]) -> list[str]:
    """An order as units × stations: each unit's stations in route order, ✓ done, ▶ at it now,
    ✗ code when it failed there (from `show`)."""
    lines = [f"{info['order_id']}  {info['State']}  {info['Progress']}/{info['Quantity']} units"
             + (f"  ({info['WaitingFor']})" if info.get("WaitingFor") else "")]  # fmt: skip
    for unit in range(info["Quantity"]):
        cells = []
        for step in (s for s in info["Steps"] if s["Unit"] == unit):
            if step["FinishedAt"] is None:
                mark = "▶"
            elif step["ResultCode"]:
                mark = f"✗{step['ResultCode']}"
            else:
                mark = "✓"
            cells.append(f"{step['Station']} {mark}")
        lines.append(f"  unit {unit}: " + ("  ".join(cells) if cells else "waiting"))
    return lines


async def watch_progress(
    line: Line,
    order_id: str,
    emit: Callable[[str], None],
    timeout_s: float | None,
    *,
    redraw: bool = False,
) -> dict[str, Any]:
    """Show one order's progress (`progress_lines`) each time it moves, until it ends: redrawn in
    place on a terminal (`redraw`), else printed again only when it changed. Returns its last state."""
    moved = asyncio.Event()

    class Moved:
        def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
            moved.set()

    order = await _order_node(line, order_id)
    names = ("State", "CurrentStation", "Progress", "WaitingFor")
    watched = [await order.get_child([f"{line.types_ns}:{name}"]) for name in names]
    subscription = await line.client.create_subscription(50, Moved())
    await subscription.subscribe_data_change(watched)
    shown: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                moved.clear()
                info = await show(line, order_id)
                lines = progress_lines(info)
                if lines != shown:
                    if redraw and shown:
                        emit(f"\x1b[{len(shown)}F\x1b[J" + lines[0])  # back to the block's top, clear
                        for text in lines[1:]:
                            emit(text)
                    else:
                        for text in lines:
                            emit(text)
                    shown = lines
                if OrderState(info["State"]).is_final:
                    return info
                await moved.wait()
    finally:
        await subscription.delete()


async def health(client: Client) -> str:
    """The line a linebridge server serves, from its endpoint descriptions, or ClientError.

    GetEndpoints needs no session, so this works against a secured server too (no user, no trusted
    certificate): the application URI, urn:linebridge:<line>, names the line."""
    endpoints = await client.connect_and_get_server_endpoints()
    uris = sorted({e.Server.ApplicationUri for e in endpoints})
    lines = [uri.removeprefix(APP_URI_PREFIX) for uri in uris if uri.startswith(APP_URI_PREFIX)]
    if not lines:
        raise ClientError(f"not a linebridge server (application URI {', '.join(uris) or 'none'})")
    return lines[0]
