"""The `linebridge` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from bridge.cli_alarms import alarm_app
from bridge.cli_client import health, mapping_app, nodeset_app, order_app, station_app
from bridge.cli_journal import journal_app
from bridge.cli_plc import load_mapping_or_exit, plc_app
from bridge.cli_security import audit, pki_app, user_app
from bridge.errors import ConfigurationError, MappingError
from bridge.logging import configure_logging
from bridge.mapping import load_deployment, load_mapping
from bridge.mapping.checks import register_usage
from bridge.mapping.schema import mapping_json_schema
from bridge.opcua.names import DEFAULT_ENDPOINT

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
    max_open_orders: int = typer.Option(
        10_000, min=1, help="open orders the line holds; a submit past it is refused until some finish"
    ),
    max_open_orders_per_client: int = typer.Option(5_000, min=1, help="of those, from one client"),
    journal_reserve_mb: float = typer.Option(
        64.0, min=0, help="MiB of the journal's disk new orders may not take: kept for the orders under way"
    ),
    journal_retention_days: float = typer.Option(
        0.0, min=0, help="days finished orders, audit records and alarm changes stay in the journal; 0: all"
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
    max_sessions_per_client: int = typer.Option(8, help="OPC UA sessions from one client address"),
    max_connections_per_client: int = typer.Option(
        16, help="OPC UA connections open at once from one client address (past it: closed at once)"
    ),
    max_subscriptions_per_session: int = typer.Option(10, help="OPC UA subscriptions one session may hold"),
    max_monitored_items_per_session: int = typer.Option(10_000, help="monitored items one session may hold"),
    max_queue_size: int = typer.Option(
        10, min=1, help="values a monitored item may queue between publishes (asked 0 or 1: 1)"
    ),
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
    from bridge.cli_serve import serve  # the server stack: only for `run`, not a client command

    serve(line, orders, opts)


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
