"""Orders per second through the whole simulated line, and the bridge's own cost per step.

The simulated line runs at zero cycle time in a thread of its own (its own event loop), so the
PLC's "done" instant and the bridge's "step recorded" instant are read from one monotonic clock.
In the same run a bare pymodbus client loop makes as many request/response pairs against the
same PLCs, and the ratio of the two times is printed: what the bridge adds on top of Modbus.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from pymodbus.client import AsyncModbusTcpClient

from bridge.domain.model import Order, OrderEvent, Step, Unit
from bridge.handshake import STATUS_REGISTERS
from bridge.journal import SqliteJournal
from bridge.logging import configure_logging
from bridge.mapping import apply_deployment, load_mapping, parse_mapping
from bridge.mapping.model import Endpoint, LineMapping
from bridge.opcua.face import OpcUaFace, OpcUaSettings
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine

ROOT = Path(__file__).resolve().parent.parent


class LineThread:
    """The simulated line served from its own thread and event loop."""

    def __init__(self, mapping: LineMapping, telemetry_period_s: float = 0.5) -> None:
        self.mapping = mapping
        self.telemetry_period_s = telemetry_period_s
        self.done_at: dict[tuple[str, int], float] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LineThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("simulated line did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        ports = dict.fromkeys(self.mapping.stations, 0)
        async with SimulatedLine(
            self.mapping, ports=ports, speed=0, seed=1, telemetry_period_s=self.telemetry_period_s
        ) as line:
            for name, plc in line.plcs.items():
                plc.observer = lambda event, seq, name=name: self._observe(name, event, seq)
            self.endpoints = line.endpoints()
            self._ready.set()
            await self._stop.wait()

    def _observe(self, station: str, event: str, seq: int) -> None:
        if event == "step_done":
            self.done_at[(station, seq)] = time.monotonic()


class TimedJournal(SqliteJournal):
    """The real journal, noting when each step is recorded as closed."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.closed_at: dict[tuple[str, int], float] = {}

    def close_step(self, order: Order, unit: Unit, step: Step, events: list[OrderEvent]) -> None:
        super().close_step(order, unit, step, events)
        self.closed_at[(step.station, step.seq)] = time.monotonic()


async def run_bridge(
    mapping: LineMapping, orders: int, data_dir: Path, telemetry_s: float = 0
) -> tuple[float, Bridge, TimedJournal]:
    settings = BridgeSettings(data_dir=data_dir, telemetry_interval_s=telemetry_s, status_poll_s=0.001)
    bridge = Bridge(mapping, settings)
    journal = TimedJournal(data_dir / "timed.sqlite")
    bridge.engine.journal = journal
    await bridge.start()
    face = subscriber = None
    if telemetry_s:  # the OPC UA face publishes the telemetry, to a client in another process
        face = OpcUaFace(bridge, OpcUaSettings(endpoint="opc.tcp://127.0.0.1:0/"))
        await face.start()
        subscriber = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.subscriber", face.endpoint, str(telemetry_s),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        assert subscriber.stdout is not None
        await subscriber.stdout.readline()  # subscribed
        await asyncio.sleep(3)  # warm-up: telemetry flowing before the first order
    try:
        began = time.perf_counter()
        for i in range(orders):
            await bridge.submit(f"B-{i:05}", "AC-W", {"capacity_btu": (9000, 12000, 18000, 24000)[i % 4]})
        await bridge.wait_idle()
        elapsed = time.perf_counter() - began
    finally:
        if subscriber is not None:
            subscriber.terminate()
            await subscriber.wait()
        if face is not None:
            await face.stop()
        await bridge.stop()
        journal.close()
    return elapsed, bridge, journal


async def bare_pymodbus(endpoints: dict[str, Endpoint], requests: dict[str, int]) -> float:
    """The same number of request/response pairs per station, with nothing but pymodbus."""

    async def station(ep: Endpoint, count: int) -> None:
        client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=2, retries=0)
        await client.connect()
        try:
            for _ in range(count):
                reply = await client.read_input_registers(0, count=STATUS_REGISTERS, device_id=ep.device_id)
                assert not reply.isError()
        finally:
            client.close()

    began = time.perf_counter()
    await asyncio.gather(*(station(endpoints[name], n) for name, n in requests.items()))
    return time.perf_counter() - began


def with_telemetry(path: Path, registers: int) -> LineMapping:
    """The mapping at `path` with `registers` more changing uint16 telemetry fields (input 400 on)
    in every station type."""
    data = yaml.safe_load(path.read_text())
    load = {"table": "input", "type": "uint16", "sim": {"nominal": 30000, "noise": 20000}}
    for kind in data["station_types"].values():
        for i in range(registers):
            kind.setdefault("telemetry", {})[f"load_{i:03d}"] = {**load, "address": 400 + i}
    return parse_mapping(data, source=str(path))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--mapping", type=Path, default=ROOT / "mappings" / "ac_line.yaml")
    parser.add_argument(
        "--telemetry-load", type=int, default=0, metavar="N",
        help="add N changing telemetry registers to every station, polled and published every 100 ms",
    )  # fmt: skip
    args = parser.parse_args()
    configure_logging("warning")
    mapping = load_mapping(args.mapping)
    telemetry_s = 0.1 if args.telemetry_load else 0.0
    if args.telemetry_load:
        mapping = with_telemetry(args.mapping, args.telemetry_load)
    with LineThread(mapping, telemetry_s or 0.5) as line, tempfile.TemporaryDirectory() as tmp:
        deployed = apply_deployment(mapping, line.endpoints)
        elapsed, bridge, journal = asyncio.run(run_bridge(deployed, args.orders, Path(tmp), telemetry_s))
        overhead_ms = [
            (closed - line.done_at[key]) * 1000
            for key, closed in journal.closed_at.items()
            if key in line.done_at
        ]
        requests = {name: link.counters.requests for name, link in bridge.links.items()}
        bare = asyncio.run(bare_pymodbus(line.endpoints, requests))
    steps = len(journal.closed_at)
    total = sum(requests.values())
    print(f"line {mapping.line.name}: {len(mapping.stations)} stations, simulator at zero cycle time")
    if args.telemetry_load:
        values = args.telemetry_load * len(mapping.stations) * 10
        print(f"telemetry load         {values:,} values/s polled and published every 100 ms, one subscriber")
    print(f"orders                 {args.orders} ({steps} station steps)")
    print(
        f"bridge                 {elapsed:.2f} s, {args.orders / elapsed:.1f} orders/s,"
        f" {steps / elapsed:.0f} steps/s"
    )
    print(f"modbus requests        {total} ({total / steps:.1f} per step)")
    print(f"step overhead          PLC done -> step recorded: p50 {percentile(overhead_ms, 50):.2f} ms,"
          f" p99 {percentile(overhead_ms, 99):.2f} ms ({len(overhead_ms)} steps)")  # fmt: skip
    print(f"bare pymodbus          {total} requests in {bare:.2f} s ({total / bare:.0f} req/s)")
    print(f"ratio bridge/bare      {elapsed / bare:.2f}")


if __name__ == "__main__":
    main()
