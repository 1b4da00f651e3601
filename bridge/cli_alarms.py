"""`linebridge alarm …`: the alarms of a running bridge over OPC UA, as an alarm client sees them,
and their history from the journal (docs/alarms.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from asyncua import Client

from bridge.cli_client import ENDPOINT, LINE, client_run
from bridge.journal import JOURNAL_FILE
from bridge.opcua.alarm_client import alarm_line, answer, out_of_service, retained_alarms, switch
from bridge.opcua.client import find_line

alarm_app = typer.Typer(no_args_is_help=True, help="Alarms of a running bridge: list, acknowledge, shelve.")
COMMENT = typer.Option("", "--comment", "-c", help="what you saw or did (kept in the alarm history)")


@alarm_app.command("list")
def alarm_list(endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Every alarm that waits for an operator (active, or not yet acknowledged or confirmed), the
    most severe first, got by ConditionRefresh as any alarm client gets them; then every alarm an
    operator shelved or disabled, so none is forgotten."""

    async def work(client: Client) -> None:
        found = await find_line(client, line)
        alarms = await retained_alarms(found)
        typer.echo(f"{'prio':<6} {'sev':>4}  {'alarm':<28} {'state':<6} {'answer':<9} {'since':<8}  message")
        for alarm in alarms:
            typer.echo(alarm_line(alarm))
        if not alarms:
            typer.echo("no alarm waits for an operator")
        if aside := await out_of_service(found):
            typer.echo("out of service: " + "; ".join(aside))

    client_run(work, endpoint)


def _answer(alarm_id: str, action: str, endpoint: str, line: str | None, said: str, **how: object) -> None:
    async def work(client: Client) -> None:
        await answer(await find_line(client, line), alarm_id, action, **how)  # type: ignore[arg-type]
        typer.echo(f"{alarm_id}: {said}")

    client_run(work, endpoint)


@alarm_app.command("ack")
def alarm_ack(
    alarm_id: str, comment: str = COMMENT, endpoint: str = ENDPOINT, line: str | None = LINE
) -> None:
    """Acknowledge an alarm (STATION.NAME, as `alarm list` shows it): you have seen it."""
    _answer(alarm_id, "ack", endpoint, line, "acknowledged", comment=comment)


@alarm_app.command("confirm")
def alarm_confirm(
    alarm_id: str, comment: str = COMMENT, endpoint: str = ENDPOINT, line: str | None = LINE
) -> None:
    """Confirm an acknowledged alarm: you have dealt with it."""
    _answer(alarm_id, "confirm", endpoint, line, "confirmed", comment=comment)


@alarm_app.command("shelve")
def alarm_shelve(
    alarm_id: str,
    hours: float = typer.Option(1.0, "--hours", help="for how long (at most 8)"),
    once: bool = typer.Option(False, "--once", help="until it returns to normal instead"),
    endpoint: str = ENDPOINT,
    line: str | None = LINE,
) -> None:
    """Shelve an alarm: out of the banner, still judged and recorded."""
    if once:
        _answer(alarm_id, "oneshot", endpoint, line, "shelved until it returns to normal")
    else:
        _answer(alarm_id, "shelve", endpoint, line, f"shelved for {hours:g} h", hours=hours)


@alarm_app.command("unshelve")
def alarm_unshelve(alarm_id: str, endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Put a shelved alarm back in the banner."""
    _answer(alarm_id, "unshelve", endpoint, line, "unshelved")


@alarm_app.command("disable")
def alarm_disable(alarm_id: str, endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Disable an alarm (a sensor known broken): still judged, but out of the banner, the list and
    every client's events until enabled; it stays disabled over a restart."""
    _switch(alarm_id, endpoint, line, enable=False)


@alarm_app.command("enable")
def alarm_enable(alarm_id: str, endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Enable a disabled alarm: it shows where it stands now (active or not) at once."""
    _switch(alarm_id, endpoint, line, enable=True)


def _switch(alarm_id: str, endpoint: str, line: str | None, *, enable: bool) -> None:
    async def work(client: Client) -> None:
        await switch(await find_line(client, line), alarm_id, enable=enable)
        typer.echo(f"{alarm_id}: {'enabled' if enable else 'disabled'}")

    client_run(work, endpoint)


@alarm_app.command("history")
def alarm_history(
    alarm_id: str | None = typer.Argument(None, help="one alarm (STATION.NAME); all by default"),
    data_dir: Path = typer.Option(Path("var"), help="where the journal lives"),
    limit: int = typer.Option(100, help="the last N changes"),
) -> None:
    """Every change of the alarms from the journal: activated, cleared, acknowledged (who, comment)…"""
    from bridge.cli_journal import read_journal
    from bridge.journal.reads import alarm_rows

    with read_journal(data_dir / JOURNAL_FILE) as db:
        rows = alarm_rows(db, alarm_id, limit)
    for row in rows:
        who = f"  by {row['user']}" if row["user"] else ""
        who += f": {row['comment']}" if row["user"] and row["comment"] else ""
        change = f"{row['at']}  {row['alarm']:<28} {row['what']:<12} sev {row['severity']:>4}"
        typer.echo(f"{change}  {row['message']}{who}")
