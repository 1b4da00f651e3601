"""The `plc-sim` command: serve a mapping's station PLCs until interrupted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from pydantic import ValidationError

from bridge.errors import ConfigurationError, MappingError
from bridge.lifecycle import stop_on_signals
from bridge.logging import configure_logging
from bridge.mapping import load_mapping
from bridge.mapping.model import SerialLine
from plc_sim.faults import DEFAULT_CONTROL_ADDRESS, Faults, parse_fault
from plc_sim.line import SimulatedLine
from plc_sim.plc import TELEMETRY_INTERVAL_S
from plc_sim.proxy import ISSUE_12_MIX, FaultMix, FaultyLink

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
    network_faults: float = typer.Option(
        0.0, help="put a fault-injecting proxy in front of every PLC at this multiple of the issue-12"
        " fault mix (0: none); endpoints and the deployment file then name the proxies",
    ),
    network_seed: int = typer.Option(1, help="seed of the proxies' faults"),
    serial: list[str] = typer.Option(
        [], help="a station over Modbus RTU: STATION=DEVICE[:BAUD[:PARITY]], e.g. pack=/dev/ttyS1:19200:E"
    ),
    log_level: str = typer.Option("info"),
) -> None:
    """Start every station PLC of MAPPING and print where each one listens."""
    configure_logging(log_level)
    try:
        line_mapping = load_mapping(mapping)
        faults = _faults(fault, list(line_mapping.stations))
        serial_lines = _serial_lines(serial, list(line_mapping.stations))
    except MappingError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(str(exc) if str(exc).startswith("--") else f"--fault {exc}", err=True)
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
            serial=serial_lines,
        )
    except ConfigurationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if network_faults < 0:
        typer.echo("--network-faults: a multiple of the fault mix, 0 or more", err=True)
        raise typer.Exit(2)
    mix = ISSUE_12_MIX.scaled(network_faults) if network_faults else None
    asyncio.run(_serve(line, write_deployment, mix, network_seed))


def _serial_lines(specs: list[str], stations: list[str]) -> dict[str, SerialLine]:
    lines: dict[str, SerialLine] = {}
    for spec in specs:
        station, sep, rest = spec.partition("=")
        if not sep or station not in stations:
            known = ", ".join(stations)
            raise ValueError(f"--serial {spec!r}: expected STATION=DEVICE[:BAUD[:PARITY]] ({known})")
        device, *options = rest.split(":")
        try:
            lines[station] = SerialLine(
                device=device,
                **({"baudrate": int(options[0])} if options else {}),
                **({"parity": options[1].upper()} if len(options) > 1 else {}),
            )
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"--serial {spec!r}: {exc}") from None
    return lines


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


async def _serve(
    line: SimulatedLine, write_deployment: Path | None, mix: FaultMix | None = None, seed: int = 1
) -> None:
    stop = stop_on_signals()
    try:
        await line.start()
    except OSError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    proxies: list[FaultyLink] = []
    try:
        endpoints = line.endpoints()
        if mix is not None:  # the bridge is to speak to the proxies, which speak to the PLCs
            for i, (name, ep) in enumerate(endpoints.items()):
                proxy = FaultyLink((ep.host, ep.port), mix, seed=seed * 100 + i, host=ep.host)
                await proxy.start()
                proxies.append(proxy)
                endpoints[name] = ep.model_copy(update={"port": proxy.port})
        if write_deployment is not None:
            line.write_deployment(write_deployment, endpoints)
        typer.echo(f"{'station':<12} {'type':<16} {'endpoint':<22} {'device':>6}  cycle s")
        for name, plc in line.plcs.items():
            ep = endpoints[name]
            typer.echo(
                f"{name:<12} {plc.type_name:<16} "
                f"{ep!s:<22} {ep.device_id:>6}  {plc.cycle_time_s:g}"
            )
        if proxies:
            typer.echo(f"a fault-injecting proxy in front of every PLC: {mix}", err=True)
        typer.echo("ready; Ctrl-C to stop", err=True)
        await stop.wait()
    finally:
        for proxy in proxies:
            await proxy.stop()
        await line.stop()


def main() -> None:
    app()
