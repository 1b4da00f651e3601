"""The `plc-sim` command: serve a mapping's station PLCs until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import typer

from bridge.errors import ConfigurationError, MappingError
from bridge.logging import configure_logging
from bridge.mapping import load_mapping
from plc_sim.faults import DEFAULT_CONTROL_ADDRESS, Faults, parse_fault
from plc_sim.line import SimulatedLine
from plc_sim.plc import TELEMETRY_INTERVAL_S

app = typer.Typer(add_completion=False, help="Simulated station PLCs (Modbus TCP) for a linebridge mapping.")


@app.command()
def serve(
    mapping: Path = typer.Option(..., "--mapping", "-m", help="mapping YAML file"),
    speed: float = typer.Option(1.0, help="divide cycle times by this; 0 means no cycle time"),
    bind: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    base_port: int | None = typer.Option(
        None, help="ports from here on, in station order, instead of the mapping's"
    ),
    ephemeral: bool = typer.Option(False, help="let the system pick free ports"),
    control_address: int = typer.Option(
        DEFAULT_CONTROL_ADDRESS, help="first simulator control holding register"
    ),
    fault: list[str] = typer.Option(
        [], help="station:name=value, e.g. coil:reject_next=2, '*:fault_fraction=0.1'"
    ),
    seed: int | None = typer.Option(None, help="seed for simulated results, for reproducible runs"),
    telemetry_period: float = typer.Option(
        TELEMETRY_INTERVAL_S, help="seconds between refreshes of the simulated telemetry values"
    ),
    allow: list[str] = typer.Option(
        [], help="accept Modbus clients only from this address or network (repeatable)"
    ),
    write_deployment: Path | None = typer.Option(
        None, help="write the actual endpoints here as a deployment file"
    ),
    log_level: str = typer.Option("info"),
) -> None:
    """Start every station PLC of MAPPING and print where each one listens."""
    configure_logging(log_level)
    try:
        line_mapping = load_mapping(mapping)
        faults = _faults(fault, list(line_mapping.stations))
    except MappingError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(f"--fault {exc}", err=True)
        raise typer.Exit(2) from None
    names = list(line_mapping.stations)
    if ephemeral:
        ports = dict.fromkeys(names, 0)
    elif base_port is not None:
        ports = {name: base_port + i for i, name in enumerate(names)}
    else:
        ports = {}
    try:
        line = SimulatedLine(
            line_mapping,
            host=bind,
            ports=ports,
            speed=speed,
            control_address=control_address,
            faults=faults,
            seed=seed,
            allow=allow,
            telemetry_period_s=telemetry_period,
        )
    except ConfigurationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    asyncio.run(_serve(line, write_deployment))


def _faults(specs: list[str], stations: list[str]) -> dict[str, Faults]:
    faults: dict[str, Faults] = {}
    for spec in specs:
        station, name, value = parse_fault(spec)
        targets = stations if station == "*" else [station]
        if station != "*" and station not in stations:
            raise ValueError(f"{spec!r}: unknown station {station!r} (known: {', '.join(stations)})")
        for target in targets:
            setting = faults.setdefault(target, Faults())
            setattr(setting, name, value)
    return faults


async def _serve(line: SimulatedLine, write_deployment: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await line.start()
    except OSError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    try:
        endpoints = line.endpoints()
        if write_deployment is not None:
            line.write_deployment(write_deployment)
        typer.echo(f"{'station':<12} {'type':<16} {'endpoint':<22} {'device':>6}  cycle s")
        for name, plc in line.plcs.items():
            ep = endpoints[name]
            typer.echo(
                f"{name:<12} {plc.type_name:<16} "
                f"{f'{ep.host}:{ep.port}':<22} {ep.device_id:>6}  {plc.cycle_time_s:g}"
            )
        typer.echo("ready; Ctrl-C to stop", err=True)
        await stop.wait()
    finally:
        await line.stop()


def main() -> None:
    app()
