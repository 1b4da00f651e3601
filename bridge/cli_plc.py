"""`linebridge plc`: what a PLC programmer needs before the first real order (docs/plc-guide.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from bridge.commissioning.sheet import sheet_csv, sheet_markdown
from bridge.errors import MappingError
from bridge.mapping import LineMapping, load_mapping

plc_app = typer.Typer(
    no_args_is_help=True, help="Commissioning a station PLC: its register sheet, a handshake check."
)
MAPPING = typer.Option(Path("mappings/ac_line.yaml"), "--mapping", "-m", help="mapping YAML file")


def _station_of(mapping_file: Path, station: str) -> LineMapping:
    try:
        mapping = load_mapping(mapping_file)
    except MappingError as exc:
        typer.echo(f"{mapping_file}: {len(exc.issues)} error(s)", err=True)
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(2) from None
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
    text = sheet_csv(line, station) if format == "csv" else sheet_markdown(line, station)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
