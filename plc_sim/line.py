"""A whole simulated line: one SimulatedPlc per station of a mapping, each on its own port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from bridge.mapping.model import Endpoint, LineMapping, SerialLine
from plc_sim.faults import DEFAULT_CONTROL_ADDRESS, Faults
from plc_sim.plc import TELEMETRY_INTERVAL_S, SimulatedPlc


class SimulatedLine:
    """Every station PLC of `mapping`. `ports` overrides the mapping's ports (0 = any free one)."""

    def __init__(
        self,
        mapping: LineMapping,
        *,
        host: str = "127.0.0.1",
        ports: dict[str, int] | None = None,
        speed: float = 1.0,
        control_address: int = DEFAULT_CONTROL_ADDRESS,
        faults: dict[str, Faults] | None = None,
        seed: int | None = None,
        allow: list[str] | None = None,
        telemetry_period_s: float = TELEMETRY_INTERVAL_S,
        serial: dict[str, SerialLine] | None = None,
    ) -> None:
        """`serial`: stations served over Modbus RTU on a serial line instead of TCP."""
        ports = ports or {}
        serial = serial or {}
        faults = faults or {}
        self.plcs: dict[str, SimulatedPlc] = {
            name: SimulatedPlc(
                mapping,
                name,
                host=host,
                port=ports.get(name),
                speed=speed,
                control_address=control_address,
                faults=faults.get(name),
                seed=None if seed is None else seed + i,
                allow=allow,
                telemetry_period_s=telemetry_period_s,
                serial=serial.get(name),
            )
            for i, name in enumerate(mapping.stations)
        }

    def __getitem__(self, station: str) -> SimulatedPlc:
        return self.plcs[station]

    async def start(self) -> None:
        try:
            await asyncio.gather(*(plc.start() for plc in self.plcs.values()))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(plc.stop() for plc in self.plcs.values()))

    async def __aenter__(self) -> SimulatedLine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def endpoints(self) -> dict[str, Endpoint]:
        """Where each PLC really listens, for a deployment file or a bridge under test."""
        return {
            name: Endpoint(host=plc.host, port=plc.port, device_id=plc.device_id, serial=plc.serial)
            for name, plc in self.plcs.items()
        }

    def write_deployment(self, path: Path, endpoints: dict[str, Endpoint] | None = None) -> None:
        """A deployment file (`linebridge run --deployment`) pointing at these PLCs (or at
        `endpoints` in front of them: proxies)."""
        write_deployment(path, endpoints if endpoints is not None else self.endpoints())


def write_deployment(path: Path, endpoints: dict[str, Endpoint]) -> None:
    """A deployment file (`linebridge run --deployment`): each station at `endpoints`."""
    doc = {"stations": {name: ep.model_dump(exclude_none=True) for name, ep in endpoints.items()}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
