"""The shell's OPC UA client commands: `linebridge order …`, `linebridge health`, `linebridge nodeset`,
`linebridge mapping reload`, `linebridge station clear`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import typer
from asyncua import Client, ua

from bridge.errors import MappingError
from bridge.mapping import load_mapping
from bridge.opcua.alarm_client import alarm_line, retained_alarms
from bridge.opcua.client import ClientError, Credentials, find_line, parse_options
from bridge.opcua.client import cancel as ua_cancel
from bridge.opcua.client import clear_station_error as ua_clear_station_error
from bridge.opcua.client import health as ua_health
from bridge.opcua.client import list_orders as ua_list_orders
from bridge.opcua.client import reload_mapping as ua_reload_mapping
from bridge.opcua.client import show as ua_show
from bridge.opcua.client import submit as ua_submit
from bridge.opcua.client import watch as ua_watch
from bridge.opcua.client import watch_progress as ua_watch_progress
from bridge.opcua.names import DEFAULT_ENDPOINT, ORDER_REFUSAL
from bridge.opcua.station_client import list_stations as ua_list_stations
from bridge.opcua.station_client import result_units as ua_result_units
from bridge.opcua.station_client import show_station as ua_show_station

order_app = typer.Typer(no_args_is_help=True, help="Place and follow orders on a running bridge (OPC UA).")
nodeset_app = typer.Typer(no_args_is_help=True, help="The OPC UA model as NodeSet2 XML.")
mapping_app = typer.Typer(no_args_is_help=True, help="Mapping JSON Schema; reload a running bridge's.")
station_app = typer.Typer(no_args_is_help=True, help="The stations of a running bridge.")
ENDPOINT = typer.Option(DEFAULT_ENDPOINT, "--endpoint", "-e", help="the bridge's OPC UA endpoint")
LINE = typer.Option(None, "--line", help="line name (default: the first line of the plant)")


def client_run(
    work: Callable[[Client], Awaitable[None]], endpoint: str, timeout_s: float = 10.0, *, session: bool = True
) -> None:
    """Connect (within `timeout_s`), run `work`, and turn every failure into one line on stderr
    and exit 1. `session=False`: `work` gets the client unconnected, with `timeout_s` for all of it."""

    async def in_session() -> None:
        client = Client(endpoint, timeout=timeout_s)
        if not session:
            async with asyncio.timeout(timeout_s):
                await work(client)
            return
        credentials = Credentials.from_env(os.environ)
        await credentials.apply(client)
        try:
            async with asyncio.timeout(timeout_s):
                await client.connect()
        except ua.UaError as exc:
            raise ClientError(credentials.explain(endpoint, exc)) from None
        try:
            await work(client)
        finally:
            await client.disconnect()

    logging.getLogger("asyncua").setLevel(logging.CRITICAL + 1)  # every failure is said once, below
    try:
        asyncio.run(in_session())
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing when it is accepted"),
    endpoint: str = ENDPOINT,
    line: str | None = LINE,
) -> None:
    """Submit an order; prints its node (nothing with -q), or why it was refused (exit 1)."""

    async def work(client: Client) -> None:
        options = parse_options(option)
        if quantity is not None:
            options["quantity"] = quantity
        if priority:
            options["priority"] = priority
        nodeid = await ua_submit(await find_line(client, line), order_id, product, options)
        if not quiet:
            typer.echo(f"accepted {order_id}: {nodeid.to_string()}")

    client_run(work, endpoint)


@mapping_app.command("reload")
def mapping_reload(endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Make a running bridge read its mapping file again. It takes new parameter derivations (for
    orders accepted from now on) and refuses anything that needs a restart, printing every reason.
    `kill -HUP` on the bridge does the same."""

    async def work(client: Client) -> None:
        changed = await ua_reload_mapping(await find_line(client, line))
        typer.echo("reloaded: " + (", ".join(changed) or "no change"))

    client_run(work, endpoint)


@station_app.command("list")
def station_list(endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """One line per station: its state, whether its PLC answers, the order it works on, its cycle
    count, failed requests, active alarms and the last error."""

    async def work(client: Client) -> None:
        found = await find_line(client, line)
        stations = await ua_list_stations(found)
        active = Counter(a.station for a in await retained_alarms(found) if a.active)
        header = f"{'station':<12} {'state':<8} {'PLC':<8} {'order':<20} {'cycles':>7} {'errors':>6}"
        typer.echo(header + f" {'alarms':>6}  last error")
        for st in stations:
            plc = "answers" if st["Connected"] else "silent"
            typer.echo(
                f"{st['station']:<12} {st['State']:<8} {plc:<8} {st['CurrentOrder'] or '-':<20}"
                f" {_shown(st['CycleCount']):>7} {_shown(st['Diagnostics.Errors']):>6}"
                f" {active[st['station']]:>6}  {st['Diagnostics.LastError'] or ''}"
            )

    client_run(work, endpoint)


@station_app.command("show")
def station_show(station: str, endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """A station's state, its alarms that wait for an operator, and every value it has: telemetry,
    setpoints, the last step's parameters and results, diagnostics; each with its unit, quality
    (good, uncertain, bad and why) and age."""

    async def work(client: Client) -> None:
        found = await find_line(client, line)
        info = await ua_show_station(found, station)
        plc = "answers" if info["Connected"] else "does not answer"
        typer.echo(
            f"{station}  {info['State']}  PLC {plc}  order {info['CurrentOrder'] or '-'}"
            f"  cycles {_shown(info['CycleCount'])}  last cycle {_shown(info['LastCycleTime'])} ms"
        )
        alarms = [a for a in await retained_alarms(found) if a.station == station]
        typer.echo("Alarms:" + ("" if alarms else " none waiting"))
        for alarm in alarms:
            typer.echo(f"  {alarm_line(alarm)}")
        for folder in ("Telemetry", "Setpoints", "Parameters", "Results", "Diagnostics"):
            if info[folder]:
                typer.echo(f"{folder}:")
            for r in info[folder]:
                shown = r.age_s is not None and r.value is not None and folder != "Diagnostics"
                age = f"  changed {r.age_s:.1f} s ago" if shown else ""
                typer.echo(f"  {r.name:<24} {_shown(r.value, r.precision):>14} {r.unit:<8} {r.quality}{age}")

    client_run(work, endpoint)


def _shown(value: object, precision: int | None = None) -> str:
    """A value for the shell: with the mapping's precision (digits after the point) where it gives
    one, else six significant digits; "-" for none yet."""
    if not isinstance(value, float):
        return "-" if value is None else str(value)
    return f"{value:.{precision}f}" if precision is not None else f"{value:.6g}"


@station_app.command("clear")
def station_clear(
    station: str,
    rerun: bool = typer.Option(False, "--rerun", help="a step its PLC lost in a restart: run it again"),
    fail: bool = typer.Option(False, "--fail", help="a step its PLC lost in a restart: fault the unit"),
    endpoint: str = ENDPOINT,
    line: str | None = LINE,
) -> None:
    """Let a station work again that the bridge holds: its PLC ran a step the bridge did not start
    (another Modbus master: find it first), or restarted mid-step (say --rerun or --fail).
    docs/handshake.md."""
    if rerun and fail:
        typer.echo("say --rerun or --fail, not both", err=True)
        raise typer.Exit(2)
    decision = "rerun" if rerun else "fail" if fail else ""

    async def work(client: Client) -> None:
        cleared = await ua_clear_station_error(await find_line(client, line), station, decision)
        typer.echo(f"{station}: {cleared}")

    client_run(work, endpoint)


@order_app.command("cancel")
def order_cancel(order_id: str, endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Cancel an order: waiting units stop, a running step is aborted."""

    async def work(client: Client) -> None:
        await ua_cancel(await find_line(client, line), order_id)
        typer.echo(f"cancelled {order_id}")

    client_run(work, endpoint)


@order_app.command("show")
def order_show(order_id: str, endpoint: str = ENDPOINT, line: str | None = LINE) -> None:
    """Print an order's state, progress and steps."""

    async def work(client: Client) -> None:
        found = await find_line(client, line)
        info = await ua_show(found, order_id)
        progress = f"{info['Progress']}/{info['Quantity']} units"
        typer.echo(
            f"{info['order_id']}  {info['Product']}  {info['State']}  {progress}"
            + (f"  at {info['CurrentStation']}" if info["CurrentStation"] else "")
            + (f"  fault {info['FaultStation']} code {info['ResultCode']}" if info["FaultStation"] else "")
        )
        units = await ua_result_units(found, {step["Station"] for step in info["Steps"]})
        for step in info["Steps"]:
            results = json.loads(step["Results"]) if step["Results"] else {}
            shown = "  ".join(
                " ".join(filter(None, (name, _shown(value, precision), unit)))
                for name, value in results.items()
                for unit, precision in [units.get((step["Station"], name), ("", None))]
            )
            typer.echo(
                f"  unit {step['Unit']}  {step['Station']:<12} seq {step['Sequence']:<5}"
                f" code {step['ResultCode']}  {shown}"
            )

    client_run(work, endpoint)


@order_app.command("list")
def order_list(
    state: list[str] = typer.Option([], help="only orders in this state (repeatable), e.g. running"),
    endpoint: str = ENDPOINT,
    line: str | None = LINE,
) -> None:
    """One line per order in the bridge's address space: state, progress, where it is or why it
    waits or faulted (finished orders stay for --order-retention; all are in the journal)."""

    async def work(client: Client) -> None:
        found = await find_line(client, line)
        listed = await ua_list_orders(found)
        orders = [o for o in listed if not state or o["State"] in state]
        typer.echo(f"{'order':<20} {'product':<10} {'state':<10} {'units':>7}  where")
        for o in orders:
            where = o["CurrentStation"] or ""
            if o["FaultStation"]:
                where = f"faulted at {o['FaultStation']} (code {o['ResultCode']})"
            elif o["WaitingFor"]:
                where = o["WaitingFor"]
            units = f"{o['Progress']}/{o['Quantity']}"
            typer.echo(f"{o['order_id']:<20} {o['Product']:<10} {o['State']:<10} {units:>7}  {where}")
        typer.echo(f"{len(orders)} order(s)", err=True)
        refusal = await found.child(ORDER_REFUSAL).read_value()
        if refusal:  # what the next submit would hear, said before it is tried
            typer.echo(f"new orders are refused: {refusal}", err=True)

    client_run(work, endpoint)


@order_app.command("watch")
def order_watch(
    order_id: str | None = typer.Argument(None, help="follow this order until it finishes (default: all)"),
    timeout: float | None = typer.Option(None, help="stop after this many seconds"),
    progress: bool = typer.Option(False, "--progress", help="units × stations of one order, as it moves"),
    endpoint: str = ENDPOINT,
    line: str | None = LINE,
) -> None:
    """Print order state changes as they happen, station by station; with --progress, one order as
    units × stations (redrawn in place on a terminal, printed anew on each move otherwise)."""

    async def work(client: Client) -> None:
        if progress:
            if order_id is None:
                raise ClientError("--progress follows one order: give its id")
            try:
                info = await ua_watch_progress(
                    await find_line(client, line), order_id, typer.echo, timeout, redraw=sys.stdout.isatty()
                )
            except TimeoutError:
                raise ClientError(f"{order_id} did not finish within {timeout} s") from None
            if info["State"] != "completed":
                raise typer.Exit(1)
            return
        try:
            await ua_watch(await find_line(client, line), order_id, typer.echo, timeout)
        except TimeoutError:
            if order_id is not None:
                raise ClientError(f"{order_id} did not finish within {timeout} s") from None

    client_run(work, endpoint)


def health(endpoint: str = ENDPOINT, timeout: float = typer.Option(5.0, help="seconds")) -> None:
    """Exit 0 when a linebridge server answers at the endpoint and names its line (for container
    health checks). Needs no session, so it works with --security too."""

    async def work(client: Client) -> None:
        typer.echo(f"ok {endpoint} line {await ua_health(client)}")

    client_run(work, endpoint, timeout_s=timeout, session=False)


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
    logging.getLogger("asyncua").setLevel(logging.CRITICAL + 1)  # every failure is said once, below
    from bridge.opcua.nodeset import export_nodeset  # builds a server's address space: only here

    asyncio.run(export_nodeset(line, file))
    typer.echo(f"wrote {file}")
