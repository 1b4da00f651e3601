"""The `linebridge` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
import typer
import yaml
from asyncua import Client, ua

from bridge.errors import ConfigurationError, MappingError, OrderRejected
from bridge.journal import SqliteJournal
from bridge.logging import configure_logging
from bridge.mapping import LineMapping, load_deployment, load_mapping
from bridge.mapping.checks import register_usage
from bridge.opcua.client import ClientError, find_line, parse_options
from bridge.opcua.client import cancel as ua_cancel
from bridge.opcua.client import health as ua_health
from bridge.opcua.client import show as ua_show
from bridge.opcua.client import submit as ua_submit
from bridge.opcua.client import watch as ua_watch
from bridge.opcua.face import DEFAULT_ENDPOINT, OpcUaFace, OpcUaSettings, SecuritySettings
from bridge.opcua.nodeset import export_nodeset
from bridge.security.pki import Pki
from bridge.security.users import ROLES, add_user
from bridge.service import JOURNAL_FILE, Bridge, BridgeSettings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="linebridge: OPC UA ⇄ Modbus TCP bridge for a production line.",
)


@app.command()
def validate(mapping: Path = typer.Argument(..., help="mapping YAML file")) -> None:
    """Check a mapping file; print a summary, or every error and exit 2."""
    try:
        line = load_mapping(mapping)
    except MappingError as exc:
        typer.echo(f"{mapping}: {len(exc.issues)} error(s)", err=True)
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"ok: {mapping}")
    typer.echo(
        f"line {line.line.name}: {len(line.stations)} stations, "
        f"{len(line.station_types)} station types, {len(line.products)} product(s)"
    )
    typer.echo(f"  {'station':<12} {'type':<16} {'endpoint':<22} registers used")
    for name, station in line.stations.items():
        usage = ", ".join(f"{table} {count}" for table, count in sorted(register_usage(line, name).items()))
        ep = station.endpoint
        typer.echo(f"  {name:<12} {station.type:<16} {f'{ep.host}:{ep.port}/{ep.device_id}':<22} {usage}")
    for pid, product in line.products.items():
        route = " → ".join(s if isinstance(s, str) else "|".join(s) for s in product.route)
        typer.echo(f"product {pid}: {len(product.options)} options; route {route}")


@app.command()
def run(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file of these options (e.g. opcua_endpoint: ...); flags win"
    ),
    mapping: Path = typer.Option(Path("mappings/ac_line.yaml"), "--mapping", "-m", help="mapping YAML file"),
    deployment: Path | None = typer.Option(None, help="deployment file with the stations' real endpoints"),
    data_dir: Path = typer.Option(Path("var"), help="where the journal (SQLite) lives"),
    submit: list[Path] = typer.Option([], help="JSON file of orders to submit at start (idempotent)"),
    demo: bool = typer.Option(False, help="submit one demo order of the first product at start"),
    exit_when_idle: bool = typer.Option(False, help="stop once no order has work left"),
    telemetry_interval: float = typer.Option(1.0, help="seconds between telemetry polls; 0 = off"),
    step_timeout: float | None = typer.Option(None, help="abort a step the PLC has not finished after this"),
    request_timeout: float = typer.Option(1.0, help="seconds to wait for one Modbus answer"),
    opcua_endpoint: str = typer.Option(DEFAULT_ENDPOINT, help="where the OPC UA server listens"),
    no_opcua: bool = typer.Option(False, "--no-opcua", help="run the engine without the OPC UA server"),
    order_retention: float = typer.Option(3600.0, help="seconds a finished order stays in the address space"),
    security: bool = typer.Option(
        False, "--security", help="signed and encrypted endpoints, users and roles"
    ),
    pki_dir: Path | None = typer.Option(None, help="PKI folder (default DATA_DIR/pki)"),
    users: Path | None = typer.Option(None, help="users file (default DATA_DIR/users.yaml)"),
    allow_none_endpoint: bool = typer.Option(False, help="with --security, also offer the None endpoint"),
    allow_insecure_remote: bool = typer.Option(
        False, help="allow the None endpoint on a non-loopback address"
    ),
    log_level: str = typer.Option("info"),
) -> None:
    """Run the bridge: reload the journal, reconcile with the PLCs, execute orders."""
    opts = {name: value for name, value in locals().items() if name not in ("ctx", "config")}
    try:
        if config is not None:
            opts.update(_read_config(ctx, config, opts))
        configure_logging(opts["log_level"])
        line = load_mapping(opts["mapping"])
        if opts["deployment"] is not None:
            line = load_deployment(line, opts["deployment"])
        orders = [order for path in opts["submit"] for order in _read_orders(Path(path))]
    except (MappingError, ConfigurationError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    settings = BridgeSettings(
        data_dir=Path(opts["data_dir"]),
        telemetry_interval_s=opts["telemetry_interval"],
        step_timeout_s=opts["step_timeout"],
        request_timeout_s=opts["request_timeout"],
    )
    opcua = None
    if not opts["no_opcua"]:
        data_dir = Path(opts["data_dir"])
        secure = None
        if opts["security"]:
            secure = SecuritySettings(
                pki_dir=Path(opts["pki_dir"] or data_dir / "pki"),
                users_file=Path(opts["users"] or data_dir / "users.yaml"),
                allow_none_endpoint=opts["allow_none_endpoint"],
            )
        opcua = OpcUaSettings(
            endpoint=opts["opcua_endpoint"],
            order_retention_s=opts["order_retention"],
            security=secure,
            allow_insecure_remote=opts["allow_insecure_remote"],
        )
    try:
        asyncio.run(
            _run(line, settings, orders, opcua, demo=opts["demo"], exit_when_idle=opts["exit_when_idle"])
        )
    except ConfigurationError as exc:  # found only once the server starts (e.g. an exposed None endpoint)
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _read_config(ctx: typer.Context, path: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Options from a YAML file, for every option not given on the command line."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read configuration: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping of option names to values")
    chosen: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in opts:
            raise ConfigurationError(f"{path}: {key}: unknown option (known: {', '.join(sorted(opts))})")
        source = ctx.get_parameter_source(name)
        if source is None or source.name == "DEFAULT":  # the command line wins over the file
            chosen[name] = Path(value) if isinstance(opts[name], Path) else value
    return chosen


def _read_orders(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: cannot read orders: {exc}") from None
    orders = data if isinstance(data, list) else [data]
    if not all(isinstance(o, dict) for o in orders):
        raise ConfigurationError(f"{path}: expected an order object or a list of them")
    return orders


async def _run(
    line: LineMapping,
    settings: BridgeSettings,
    orders: list[dict[str, Any]],
    opcua: OpcUaSettings | None,
    *,
    demo: bool,
    exit_when_idle: bool,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Bridge(line, settings) as bridge:
        face = OpcUaFace(bridge, opcua) if opcua is not None else None
        if face is not None:
            await face.start()
        try:
            await _serve(bridge, line, orders, stop, demo=demo, exit_when_idle=exit_when_idle)
        finally:
            if face is not None:
                await face.stop()


async def _serve(
    bridge: Bridge,
    line: LineMapping,
    orders: list[dict[str, Any]],
    stop: asyncio.Event,
    *,
    demo: bool,
    exit_when_idle: bool,
) -> None:
    log = structlog.get_logger("bridge.cli")
    if demo:
        product = next(iter(line.products))
        orders = [*orders, {"order_id": f"demo-{int(time.time())}", "product": product, "options": {}}]
    for order in orders:
        try:
            accepted = await bridge.submit(
                order.get("order_id"),
                order.get("product"),
                order.get("options"),
                quantity=order.get("quantity"),
                priority=order.get("priority", 0),
            )
            log.info("order_submitted", order_id=accepted.order_id, state=str(accepted.state))
        except OrderRejected as exc:
            log.error("order_rejected", order_id=order.get("order_id"), field=exc.field, reason=exc.reason)
    waiters = [asyncio.create_task(stop.wait())]
    if exit_when_idle:
        waiters.append(asyncio.create_task(bridge.wait_idle()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()


order_app = typer.Typer(no_args_is_help=True, help="Place and follow orders on a running bridge (OPC UA).")
app.add_typer(order_app, name="order")
nodeset_app = typer.Typer(no_args_is_help=True, help="The OPC UA model as NodeSet2 XML.")
app.add_typer(nodeset_app, name="nodeset")
ENDPOINT = typer.Option(DEFAULT_ENDPOINT, "--endpoint", "-e", help="the bridge's OPC UA endpoint")
LINE = typer.Option(None, "--line", help="line name (default: the first line of the plant)")


def _client_run(work: Callable[[Client], Awaitable[None]], endpoint: str, timeout_s: float = 10.0) -> None:
    """Connect (within `timeout_s`), run `work`, and turn every failure into one line on stderr
    and exit 1."""

    async def session() -> None:
        client = Client(endpoint, timeout=timeout_s)
        async with asyncio.timeout(timeout_s):
            await client.connect()
        try:
            await work(client)
        finally:
            await client.disconnect()

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        asyncio.run(session())
    except ClientError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except (OSError, TimeoutError, ua.UaError) as exc:
        typer.echo(f"{endpoint}: {exc or type(exc).__name__}", err=True)
        raise typer.Exit(1) from None


@order_app.command("submit")
def order_submit(
    order_id: str = typer.Argument(..., help="1-32 letters, digits, '-' or '_'"),
    product: str = typer.Option(..., "--product", "-p", help="a product of the mapping, e.g. AC-W"),
    option: list[str] = typer.Option([], "--option", "-o", help="name=value, e.g. capacity_btu=18000"),
    quantity: int | None = typer.Option(None, help="units"),
    priority: int = typer.Option(0, help="higher goes first"),
    endpoint: str = ENDPOINT,
    line: str | None = LINE,
) -> None:
    """Submit an order; prints its node, or why it was refused."""

    async def work(client: Client) -> None:
        options = parse_options(option)
        if quantity is not None:
            options["quantity"] = quantity
        if priority:
            options["priority"] = priority
        nodeid = await ua_submit(await find_line(client, line), order_id, product, options)
        typer.echo(f"accepted {order_id}: {nodeid.to_string()}")

    _client_run(work, endpoint)


@order_app.command("cancel")
def order_cancel(order_id: str, endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Cancel an order: waiting units stop, a running step is aborted."""

    async def work(client: Client) -> None:
        await ua_cancel(await find_line(client, line), order_id)
        typer.echo(f"cancelled {order_id}")

    _client_run(work, endpoint)


@order_app.command("show")
def order_show(order_id: str, endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Print an order's state, progress and steps."""

    async def work(client: Client) -> None:
        info = await ua_show(await find_line(client, line), order_id)
        progress = f"{info['Progress']}/{info['Quantity']} units"
        typer.echo(
            f"{info['order_id']}  {info['Product']}  {info['State']}  {progress}"
            + (f"  at {info['CurrentStation']}" if info["CurrentStation"] else "")
            + (f"  fault {info['FaultStation']} code {info['ResultCode']}" if info["FaultStation"] else "")
        )
        for step in info["Steps"]:
            typer.echo(
                f"  unit {step['Unit']}  {step['Station']:<12} seq {step['Sequence']:<5} "
                f"code {step['ResultCode']}  {step['Results']}"
            )

    _client_run(work, endpoint)


@order_app.command("watch")
def order_watch(
    order_id: str | None = typer.Argument(None, help="follow this order until it finishes (default: all)"),
    timeout: float | None = typer.Option(None, help="stop after this many seconds"),
    endpoint: str = ENDPOINT,
    line: str | None = LINE,
) -> None:
    """Print order state changes as they happen, station by station."""

    async def work(client: Client) -> None:
        try:
            await ua_watch(await find_line(client, line), order_id, typer.echo, timeout)
        except TimeoutError:
            if order_id is not None:
                raise ClientError(f"{order_id} did not finish within {timeout} s") from None

    _client_run(work, endpoint)


@app.command()
def health(endpoint: str = ENDPOINT, timeout: float = typer.Option(5.0, help="seconds")) -> None:
    """Exit 0 when the bridge answers over OPC UA and serves its line (for container health checks)."""

    async def work(client: Client) -> None:
        typer.echo(f"ok {endpoint} line {await ua_health(client)}")

    _client_run(work, endpoint, timeout_s=timeout)


@nodeset_app.command("export")
def nodeset_export(
    file: Path = typer.Argument(..., help="NodeSet2 XML file to write"),
    mapping: Path = typer.Option(Path("mappings/ac_line.yaml"), "--mapping", "-m"),
) -> None:
    """Write the OPC UA types generated from MAPPING as NodeSet2 XML."""
    try:
        line = load_mapping(mapping)
    except MappingError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    asyncio.run(export_nodeset(line, file))
    typer.echo(f"wrote {file}")


pki_app = typer.Typer(
    no_args_is_help=True, help="The OPC UA PKI folder: which client certificates are trusted."
)
app.add_typer(pki_app, name="pki")
user_app = typer.Typer(no_args_is_help=True, help="OPC UA users and their roles.")
app.add_typer(user_app, name="user")
PKI_DIR = typer.Option(Path("var/pki"), "--pki-dir", help="the bridge's PKI folder")


@pki_app.command("list")
def pki_list(pki_dir: Path = PKI_DIR) -> None:
    """List trusted and rejected client certificates with their thumbprints."""
    pki = Pki(pki_dir)
    for label, folder in (("trusted", pki.trusted), ("rejected", pki.rejected)):
        for tp, name, path in pki.certificates(folder) if folder.exists() else []:
            typer.echo(f"{label:<9} {tp}  {name:<30} {path.name}")


@pki_app.command("trust")
def pki_trust(
    thumbprint: str = typer.Argument(..., help="thumbprint, or its first characters"), pki_dir: Path = PKI_DIR
) -> None:
    """Trust a rejected client certificate (moves it from rejected/ to trusted/)."""
    pki = Pki(pki_dir)
    try:
        path = pki.move(thumbprint, pki.rejected, pki.trusted)
    except LookupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"trusted {path}")


@pki_app.command("reject")
def pki_reject(
    thumbprint: str = typer.Argument(..., help="thumbprint, or its first characters"), pki_dir: Path = PKI_DIR
) -> None:
    """Stop trusting a client certificate (moves it from trusted/ to rejected/)."""
    pki = Pki(pki_dir)
    try:
        path = pki.move(thumbprint, pki.trusted, pki.rejected)
    except LookupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"rejected {path}")


@user_app.command("add")
def user_add(
    name: str,
    role: str = typer.Option(..., help=f"one of {', '.join(ROLES)}"),
    users: Path = typer.Option(Path("var/users.yaml"), help="users file"),
    password: str = typer.Option(..., prompt=True, confirmation_prompt=True, hide_input=True),
) -> None:
    """Add or replace a user; the password is stored as a salted scrypt hash."""
    try:
        add_user(users, name, role, password)
    except ConfigurationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name} ({role}) written to {users}")


@app.command()
def audit(
    data_dir: Path = typer.Option(Path("var"), help="where the journal lives"),
    limit: int = typer.Option(100, help="the last N records"),
) -> None:
    """Print the audit trail: sessions, logins, certificate checks, order submits and cancels."""
    journal = SqliteJournal(data_dir / JOURNAL_FILE)
    try:
        for at, event, user, tp, outcome in journal.load_audit(limit):
            typer.echo(f"{at}  {event:<13} {user or '-':<20} {tp or '-':<40} {outcome}")
    finally:
        journal.close()


def main() -> None:
    app()
