"""`linebridge plc`: what a PLC programmer needs before the first real order (docs/plc-guide.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bridge.errors import MappingError, OrderRejected
from bridge.logging import configure_logging
from bridge.mapping import LineMapping, apply_deployment, load_mapping
from bridge.mapping.model import Endpoint
from bridge.opcua.client import ClientError, parse_options

if TYPE_CHECKING:
    from bridge.commissioning.outcomes import CaseResult

plc_app = typer.Typer(
    no_args_is_help=True, help="Commissioning a station PLC: its register sheet, a handshake check."
)
MAPPING = typer.Option(Path("mappings/ac_line.yaml"), "--mapping", "-m", help="mapping YAML file")


def load_mapping_or_exit(mapping_file: Path) -> LineMapping:
    """The mapping, or every error on stderr and exit 2 (`linebridge validate` and `plc`)."""
    try:
        return load_mapping(mapping_file)
    except MappingError as exc:
        typer.echo(f"{mapping_file}: {len(exc.issues)} error(s)", err=True)
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(2) from None


def _station_of(mapping_file: Path, station: str) -> LineMapping:
    mapping = load_mapping_or_exit(mapping_file)
    if station not in mapping.stations:
        known = ", ".join(mapping.stations)
        typer.echo(f"no station {station!r} in {mapping_file} (stations: {known})", err=True)
        raise typer.Exit(2)
    return mapping


@plc_app.command("sheet")
def sheet(
    station: str = typer.Argument(..., help="station name in the mapping"),
    mapping: Path = MAPPING,
    format: str = typer.Option("md", "--format", "-f", help="md (a page to read) or csv (for a spreadsheet)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here instead of stdout"),
) -> None:
    """Every register the bridge reads or writes at STATION: table, 0-based address and Modicon number,
    type, byte/word order, scale, unit, range, enum values, string layout, who writes it, whether the
    PLC must retain it; with md also the requests the bridge makes and the timing it expects."""
    line = _station_of(mapping, station)
    if format not in ("md", "csv"):
        typer.echo(f"--format {format!r}: use md or csv", err=True)
        raise typer.Exit(2)
    from bridge.commissioning.sheet import sheet_csv, sheet_markdown

    text = sheet_csv(line, station) if format == "csv" else sheet_markdown(line, station)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def _endpoint(text: str, device_id: int) -> Endpoint:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        typer.echo(f"--endpoint {text!r}: expected HOST:PORT, e.g. 192.168.0.20:502", err=True)
        raise typer.Exit(2)
    return Endpoint(host=host, port=int(port), device_id=device_id)


@plc_app.command("check")
def check(
    station: str = typer.Argument(..., help="station name in the mapping"),
    endpoint: str = typer.Option(..., "--endpoint", "-e", help="the PLC's Modbus TCP HOST:PORT"),
    device_id: int = typer.Option(1, help="Modbus unit (device) id"),
    mapping: Path = MAPPING,
    option: list[str] = typer.Option([], "--option", "-o", help="order option name=value for the test steps"),
    step_timeout: float | None = typer.Option(
        None, help="seconds a step may take (default: 2 × cycle_time_s + 5)"
    ),
    settle: float = typer.Option(0.5, help="seconds the PLC is watched to see it does NOT do something"),
    log_level: str = typer.Option("warning", help="log level of the check's own events (stderr)"),
) -> None:
    """Drive STATION's PLC through the handshake cases the bridge relies on (a normal step, results
    read back, a repeated start, a lost acknowledge, a rejected parameter set, a bridge restart
    mid-step) and report each as passed or failed with what was seen. Runs real steps: put the
    machine in its commissioning or dry-run mode. Writes only what the mapping declares and leaves
    the PLC idle. Exit 1 if a case failed."""
    from bridge.commissioning.check import HandshakeCheck  # the Modbus client: only for this command

    line = _station_of(mapping, station)
    line = apply_deployment(line, {station: _endpoint(endpoint, device_id)})
    configure_logging(log_level)
    try:
        options = parse_options(option)
        runner = HandshakeCheck(line, station, options=options, step_timeout_s=step_timeout, settle_s=settle)
    except (ClientError, OrderRejected) as exc:
        typer.echo(f"--option: {exc}", err=True)
        raise typer.Exit(2) from None

    def say(result: CaseResult) -> None:
        typer.echo(f"{result.outcome.upper():<7} {result.case:<20} {result.detail}")

    results = asyncio.run(runner.run(say))
    failed = [r.case for r in results if r.outcome == "failed"]
    typer.echo(
        f"{station} at {endpoint}: " + (f"FAILED {', '.join(failed)}" if failed else "handshake conforms")
    )
    if failed:
        raise typer.Exit(1)
