"""The `linebridge` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import typer
import yaml

from bridge.cli_alarms import alarm_app
from bridge.cli_client import health, mapping_app, nodeset_app, order_app, station_app
from bridge.cli_plc import load_mapping_or_exit, plc_app
from bridge.cli_security import audit, pki_app, user_app
from bridge.errors import ConfigurationError, MappingError, OrderRejected
from bridge.lifecycle import collections_paused, settle_heap
from bridge.logging import configure_logging
from bridge.mapping import LineMapping, load_deployment, load_mapping
from bridge.mapping.checks import register_usage
from bridge.mapping.schema import mapping_json_schema
from bridge.opcua.endpoint_security import SecuritySettings, check_exposure
from bridge.opcua.face import DEFAULT_ENDPOINT, OpcUaFace, OpcUaSettings
from bridge.opcua.session_limits import SessionLimits
from bridge.service import Bridge, BridgeSettings

if TYPE_CHECKING:
    from bridge.http.server import HttpSettings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="linebridge: OPC UA ⇄ Modbus TCP bridge for a production line.",
)


@app.command()
def validate(mapping: Path = typer.Argument(..., help="mapping YAML file")) -> None:
    """Check a mapping file; print a summary, or every error and exit 2."""
    line = load_mapping_or_exit(mapping)
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
    http: str | None = typer.Option(
        None, help="serve HTTP here (HOST:PORT; /metrics for Prometheus); default: none"
    ),
    http_allowed_host: list[str] = typer.Option(
        [], help="a further name the HTTP face may be reached by (Host header); repeat for more"
    ),
    order_retention: float = typer.Option(3600.0, help="seconds a finished order stays in the address space"),
    finished_in_full: int = typer.Option(
        100, help="built finished orders that keep their nodes; an order is built when a client asks for it"
    ),
    security: bool = typer.Option(
        False, "--security/--no-security", help="signed and encrypted endpoints, users and roles"
    ),
    pki_dir: Path | None = typer.Option(None, help="PKI folder (default DATA_DIR/pki)"),
    users: Path | None = typer.Option(None, help="users file (default DATA_DIR/users.yaml)"),
    allow_none_endpoint: bool = typer.Option(False, help="with --security, also offer the None endpoint"),
    allow_insecure_remote: bool = typer.Option(
        False, help="allow the None endpoint, and --http, on a non-loopback address"
    ),
    max_sessions: int = typer.Option(50, help="OPC UA sessions at once (BadTooManySessions past it)"),
    max_anonymous_sessions: int = typer.Option(10, help="of those, anonymous ones"),
    max_subscriptions_per_session: int = typer.Option(10, help="OPC UA subscriptions one session may hold"),
    max_monitored_items_per_session: int = typer.Option(10_000, help="monitored items one session may hold"),
    max_session_timeout: float = typer.Option(
        120.0, help="seconds an OPC UA session whose client has gone keeps its subscriptions, at most"
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
        mapping_file=Path(opts["mapping"]),
        deployment_file=opts["deployment"],
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
            finished_in_full=opts["finished_in_full"],
            security=secure,
            allow_insecure_remote=opts["allow_insecure_remote"],
            limits=SessionLimits(
                max_sessions=opts["max_sessions"],
                max_anonymous_sessions=opts["max_anonymous_sessions"],
                max_subscriptions_per_session=opts["max_subscriptions_per_session"],
                max_monitored_items_per_session=opts["max_monitored_items_per_session"],
                max_session_timeout_s=opts["max_session_timeout"],
            ),
        )
    try:
        if opcua is not None:  # an exposed None endpoint is refused before anything starts
            check_exposure(opcua.endpoint, opcua.security, opcua.allow_insecure_remote)
        web = None
        if opts["http"]:
            from bridge.http.server import HttpSettings  # uvicorn and Starlette: only when asked for

            web = HttpSettings.parse(opts["http"], tuple(opts["http_allowed_host"]))
        if web is not None:
            secured = opcua is not None and opcua.security is not None
            web.check_exposure(opts["allow_insecure_remote"], secured=secured)
        _raise_open_file_limit()
        until_idle = opts["exit_when_idle"]
        with collections_paused():  # until _run settles the heap: start-up builds what lives on
            asyncio.run(
                _run(line, settings, orders, opcua, web, demo=opts["demo"], exit_when_idle=until_idle)
            )
    except ConfigurationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _raise_open_file_limit() -> None:
    """The soft open-file limit up to the hard one: each client connection, PLC link and SQLite file
    is a descriptor, and a distribution's default soft limit (often 1,024) is reached by a flood
    long before the connection caps (docs/security.md) would be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    web: HttpSettings | None,
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
        with contextlib.suppress(NotImplementedError):  # `systemctl reload`, `kill -HUP`
            loop.add_signal_handler(signal.SIGHUP, lambda: _reload_on_signal(bridge))
        face = OpcUaFace(bridge, opcua) if opcua is not None else None
        if face is not None:
            await face.start()  # ConfigurationError (one line, exit 2) if its port is taken
        http = None
        if web is not None:
            from bridge.http.server import HttpFace

            http = HttpFace(bridge, web, opcua.security if opcua is not None else None)
            if face is not None:  # the line view's trends read the OPC UA face's history store
                http.view.trend_source = face.trend
        try:
            if http is not None:
                await http.start()  # ConfigurationError likewise
            settle_heap()
            await _serve(bridge, line, orders, stop, demo=demo, exit_when_idle=exit_when_idle)
        finally:
            if http is not None:
                await http.stop()
            if face is not None:
                await face.stop()


def _reload_on_signal(bridge: Bridge) -> None:
    log = structlog.get_logger("bridge.cli")

    async def reload() -> None:
        try:
            await bridge.reload_mapping()  # logs what changed
        except ConfigurationError as exc:  # MappingError included: every issue, nothing changed
            log.error("mapping_reload_refused", reason=str(exc))

    task = asyncio.create_task(reload())
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


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


@mapping_app.command("schema")
def mapping_schema(
    output: Path | None = typer.Option(None, "--output", "-o", help="write it here instead of stdout"),
) -> None:
    """The JSON Schema of a mapping file, from the model that checks it (for an editor's YAML
    language server: mappings/linebridge-mapping.schema.json is this, shipped)."""
    text = mapping_json_schema()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


journal_app = typer.Typer(no_args_is_help=True, help="The order journal (SQLite) in the data directory.")


@journal_app.command("check")
def journal_check(
    path: Path | None = typer.Argument(None, help="a journal file (default: DATA_DIR/journal.sqlite)"),
    data_dir: Path = typer.Option(Path("var"), help="where the journal lives"),
) -> None:
    """Say whether a journal is sound (read only: nothing in it is changed); exit 1 if it is not."""
    from bridge.journal.check import check_journal
    from bridge.service import JOURNAL_FILE

    file = path or data_dir / JOURNAL_FILE
    problems, counts = check_journal(file)
    if problems:
        typer.echo(f"{file}: NOT sound", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"{file}: sound; {counts['orders']} orders ({counts['unfinished']} unfinished),"
        f" {counts['steps']} steps, {counts['audit_rows']} audit records"
    )


app.add_typer(journal_app, name="journal")
app.add_typer(order_app, name="order")
app.add_typer(nodeset_app, name="nodeset")
app.add_typer(mapping_app, name="mapping")
app.add_typer(station_app, name="station")
app.add_typer(alarm_app, name="alarm")
app.add_typer(plc_app, name="plc")
app.command()(health)
app.add_typer(pki_app, name="pki")
app.add_typer(user_app, name="user")
app.command()(audit)


def main() -> None:
    app()
