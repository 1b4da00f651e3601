"""The `linebridge` command line."""

from __future__ import annotations

from pathlib import Path

import typer

from bridge.errors import MappingError
from bridge.mapping import load_mapping
from bridge.mapping.checks import register_usage

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="linebridge: OPC UA ⇄ Modbus TCP bridge for a production line.",
)


@app.callback()
def _root() -> None:
    """Keep subcommands explicit even while there is only one."""


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


def main() -> None:
    app()
