"""`linebridge journal`: the order journal (SQLite) in the data directory, read only: whether it is
sound, and its finished orders exported for the plant's own records."""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import typer

journal_app = typer.Typer(no_args_is_help=True, help="The order journal (SQLite) in the data directory.")


@contextlib.contextmanager
def read_journal(file: Path) -> Iterator[sqlite3.Connection]:
    """The journal at `file`, read only (beside a running bridge too). A missing file, or one SQLite
    cannot read, exits 1 saying so: a mistyped folder must not read as an empty journal."""
    from bridge.journal.reads import open_read_only

    if not file.is_file():
        typer.echo(f"{file}: no such file", err=True)
        raise typer.Exit(1)
    try:
        db = open_read_only(file)
        try:
            yield db
        finally:
            db.close()
    except sqlite3.Error as exc:
        typer.echo(f"{file}: cannot read it: {exc}", err=True)
        raise typer.Exit(1) from None


@journal_app.command("check")
def journal_check(
    path: Path | None = typer.Argument(None, help="a journal file (default: DATA_DIR/journal.sqlite)"),
    data_dir: Path = typer.Option(Path("var"), help="where the journal lives"),
) -> None:
    """Say whether a journal is sound (read only: nothing in it is changed); exit 1 if it is not."""
    from bridge.journal import JOURNAL_FILE
    from bridge.journal.check import check_journal

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
        + (f"; {counts['pruned']} finished orders removed by retention" if counts["pruned"] else "")
    )


class ExportFormat(enum.StrEnum):
    csv = "csv"
    jsonl = "jsonl"


def moment(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time; without a zone, UTC (the journal's)."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 date or time (2026-12-01, 2026-12-01T06:00)",
                                 param_hint=option) from None  # fmt: skip
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@journal_app.command("export")
def journal_export(
    path: Path | None = typer.Argument(None, help="a journal file (default: DATA_DIR/journal.sqlite)"),
    data_dir: Path = typer.Option(Path("var"), help="where the journal lives"),
    since: str | None = typer.Option(None, help="orders finished from this on (ISO 8601; UTC if no zone)"),
    until: str | None = typer.Option(None, help="orders finished before this (default: now)"),
    fmt: ExportFormat = typer.Option(ExportFormat.csv, "--format", help="csv, or jsonl (JSON lines)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="the file to write (default: stdout)"),
) -> None:
    """Finished orders, a row per station step (unit serial, station, times, the parameters written,
    the results read back). Read only; works beside a running bridge."""
    from bridge.journal import JOURNAL_FILE
    from bridge.journal.export import step_rows, write_csv, write_jsonl

    low, high = moment(since, "--since"), moment(until, "--until")
    file = path or data_dir / JOURNAL_FILE
    write = write_csv if fmt is ExportFormat.csv else write_jsonl
    with (  # the output is opened once the journal is: a missing journal leaves no empty file
        read_journal(file) as db,
        output.open("w", newline="") if output else contextlib.nullcontext(sys.stdout) as out,
    ):
        count = write(step_rows(db, low, high), out)
    typer.echo(f"{count} rows exported from {file}" + (f" to {output}" if output else ""), err=True)
