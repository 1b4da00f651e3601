"""Orders per second through the whole simulated line, and the bridge's own cost per step.

The simulated line runs at zero cycle time in a process of its own, as PLCs would; the PLC's
"done" instant and the bridge's "step recorded" instant are read from CLOCK_MONOTONIC, one clock
for every process on Linux.
In the same run a bare pymodbus client loop makes as many request/response pairs against the
same PLCs, and the ratio of the two times is printed: what the bridge adds on top of Modbus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from pymodbus.client import AsyncModbusTcpClient

from bench.order_path import bridge_args
from bench.subscriber import command as subscriber_command
from bench.telemetry import cpu_s, free_port
from bridge.domain.model import Order, OrderEvent, Step, Unit
from bridge.domain.ports import Rows
from bridge.handshake import STATUS_REGISTERS
from bridge.journal import SqliteJournal
from bridge.lifecycle import settle_heap
from bridge.logging import configure_logging
from bridge.mapping import apply_deployment, load_mapping, parse_mapping
from bridge.mapping.model import Endpoint, LineMapping
from bridge.opcua.face import OpcUaFace, OpcUaSettings
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine, write_deployment

ROOT = Path(__file__).resolve().parent.parent


class LineProcess:
    """The simulated line served from a process of its own, as on a plant, so its work never takes
    the bridge's interpreter; it reports each step's "done" instant on CLOCK_MONOTONIC, which is
    one clock for every process on Linux."""

    def __init__(self, mapping_file: Path, telemetry_load: int, telemetry_period_s: float = 0.5) -> None:
        self.args = [
            sys.executable, "-m", "bench.throughput", "--serve-line", "--mapping", str(mapping_file),
            "--telemetry-load", str(telemetry_load), "--telemetry-period", str(telemetry_period_s),
        ]  # fmt: skip
        self.done_at: dict[tuple[str, int], float] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> LineProcess:
        self._proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stdin=subprocess.PIPE, cwd=ROOT, text=True
        )
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline()
        if not first:
            raise RuntimeError("simulated line did not start")
        self.endpoints = {name: Endpoint(**ep) for name, ep in json.loads(first).items()}
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.close()  # the line ends when its stdin does
        self._proc.wait(30)
        self._reader.join(10)

    def wait_reported(self, steps: Collection[tuple[str, int]], timeout_s: float) -> None:
        """Until the line has reported when each of `steps` was done (it reports in batches)."""
        deadline = time.monotonic() + timeout_s
        while missing := [key for key in steps if key not in self.done_at]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the line did not report {len(missing)} steps done")
            time.sleep(0.05)

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            station, seq, at = line.split()
            self.done_at[(station, int(seq))] = float(at)


async def serve_line(mapping: LineMapping, telemetry_period_s: float) -> None:
    """`--serve-line`: the endpoints as JSON on the first line, then "station seq done_at" per step,
    a batch every 0.2 s: a write and a flush per step took a tenth of the line's process, and a
    thread of the bridge's process woke for every line."""
    ports = dict.fromkeys(mapping.stations, 0)
    sim = SimulatedLine(mapping, ports=ports, speed=0, seed=1, telemetry_period_s=telemetry_period_s)
    done: list[str] = []

    async def report() -> None:
        while True:
            await asyncio.sleep(0.2)
            if done:
                sys.stdout.write("".join(done))
                sys.stdout.flush()
                done.clear()

    async with sim as line:
        for name, plc in line.plcs.items():
            plc.observer = lambda event, seq, name=name: (
                event == "step_done" and done.append(f"{name} {seq} {time.monotonic()}\n")
            )
        print(json.dumps({name: ep.model_dump() for name, ep in line.endpoints().items()}), flush=True)
        reporter = asyncio.create_task(report())
        try:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
        finally:
            reporter.cancel()


class TimedJournal(SqliteJournal):
    """The real journal, noting how long each commit is awaited and when each step is recorded
    as closed."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.closed_at: dict[tuple[str, int], float] = {}
        self.commit_ms: list[float] = []
        self._closing: dict[int, tuple[str, int]] = {}  # id of a close_step's rows → (station, seq)

    def close_step_rows(self, order: Order, unit: Unit, step: Step, events: list[OrderEvent]) -> Rows:
        rows = super().close_step_rows(order, unit, step, events)
        self._closing[id(rows)] = (step.station, step.seq)
        return rows

    async def commit(self, rows: Rows) -> int | None:
        began = time.monotonic()
        row_id = await super().commit(rows)
        self.commit_ms.append(((done := time.monotonic()) - began) * 1000)
        if (step := self._closing.pop(id(rows), None)) is not None:
            self.closed_at[step] = done
        return row_id


def arrivals(orders: int, rate: float, seed: int = 21) -> list[float]:
    """When each order is submitted, in seconds from the first: all at once for rate 0, else `rate`
    a second, each at a seeded random instant of its own 1/rate slot. Evenly spaced at 10 a second,
    every step of a run met the 100 ms telemetry cycle at the same phase, and the p99 depended on
    which phase that was (5-17 ms from run to run, same code)."""
    if not rate:
        return [0.0] * orders
    jitter = random.Random(seed)
    return [(i + jitter.random()) / rate for i in range(orders)]


async def run_bridge(
    mapping: LineMapping, orders: int, data_dir: Path, telemetry_s: float = 0, rate: float = 0,
    subscriber_cmd: Collection[str] = (), elsewhere: TelemetryElsewhere | None = None,
) -> tuple[float, Bridge, TimedJournal, dict[str, float]]:  # fmt: skip
    polled_here = telemetry_s if elsewhere is None else 0
    settings = BridgeSettings(data_dir=data_dir, telemetry_interval_s=polled_here, status_poll_s=0.001)
    bridge = Bridge(mapping, settings)
    journal = TimedJournal(data_dir / "timed.sqlite")
    bridge.engine.journal = journal
    await bridge.start()
    face = subscriber = subscriber_cpu = reader = None
    counts: list[dict[str, float]] = []
    first_count = 0
    if telemetry_s:  # the OPC UA face publishes the telemetry, to a client in another process
        if elsewhere is None:
            face = OpcUaFace(bridge, OpcUaSettings(endpoint="opc.tcp://127.0.0.1:0/"))
            await face.start()
        else:
            await elsewhere.start()
        subscriber = await asyncio.create_subprocess_exec(
            *subscriber_cmd, face.endpoint if face is not None else elsewhere.endpoint, str(telemetry_s),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        assert subscriber.stdout is not None
        await subscriber.stdout.readline()  # subscribed
        reader = asyncio.create_task(_follow(subscriber.stdout, counts))  # a line a second
        await asyncio.sleep(3)  # warm-up: telemetry flowing before the first order
    settle_heap()  # as `linebridge run` does once it has started
    first = mapping.stations[next(iter(mapping.stations))].endpoint
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.plc_probe", first.host, str(first.port), str(first.device_id),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert probe.stdin is not None
    assert probe.stdout is not None
    await probe.stdout.readline()  # probing
    try:
        began = time.perf_counter()
        subscriber_cpu = cpu_s(subscriber.pid) if subscriber is not None else None
        first_count = len(counts)
        for i, due in enumerate(arrivals(orders, rate)):
            if due:
                await asyncio.sleep(max(0.0, began + due - time.perf_counter()))
            await bridge.submit(f"B-{i:05}", "AC-W", {"capacity_btu": (9000, 12000, 18000, 24000)[i % 4]})
        await bridge.wait_idle()
        elapsed = time.perf_counter() - began
        if subscriber is not None and subscriber_cpu is not None:  # its share of the two cores
            subscriber_cpu = 100 * (cpu_s(subscriber.pid) - subscriber_cpu) / elapsed
    finally:
        probe.stdin.close()
        answers = json.loads(await probe.stdout.readline())
        answers["subscriber_cpu_percent"] = subscriber_cpu
        window = counts[max(first_count - 1, 0) :] if reader is not None else []
        if len(window) > 1:  # what the subscriber received while the orders ran
            received = window[-1]["values"] - window[0]["values"]
            answers["received_per_s"] = received / (window[-1]["at"] - window[0]["at"])
        if reader is not None:
            reader.cancel()
        await probe.wait()
        if subscriber is not None:
            subscriber.terminate()
            await subscriber.wait()
        if face is not None:
            await face.stop()
        if elsewhere is not None:
            await elsewhere.stop()
        await bridge.stop()
        journal.close()
    return elapsed, bridge, journal, answers


async def _follow(stream: asyncio.StreamReader, counts: list[dict[str, float]]) -> None:
    async for line in stream:
        counts.append(json.loads(line))


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
    return parse_mapping(telemetry_data(path, registers), source=str(path))


def telemetry_data(path: Path, registers: int) -> dict[str, Any]:
    """The mapping at `path` with `registers` more changing uint16 telemetry fields (input 400 on)
    in every station type, as YAML data."""
    data = yaml.safe_load(path.read_text())
    load = {"table": "input", "type": "uint16", "sim": {"nominal": 30000, "noise": 20000}}
    for kind in data["station_types"].values():
        for i in range(registers):
            kind.setdefault("telemetry", {})[f"load_{i:03d}"] = {**load, "address": 400 + i}
    return data


class TelemetryElsewhere:
    """`--telemetry-elsewhere`: the same telemetry polled and published by a second `linebridge
    run` (no orders) against the same PLCs, so none of it runs in the measured bridge's process:
    what the telemetry would cost the order path if it had a process of its own, on this machine."""

    def __init__(
        self, mapping_data: dict[str, Any], endpoints: dict[str, Endpoint], folder: Path, interval_s: float
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mapping.yaml").write_text(yaml.safe_dump(mapping_data))
        write_deployment(folder / "deployment.yaml", endpoints)
        self.endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
        self.args = bridge_args(
            folder / "deployment.yaml", folder / "data", "--telemetry-interval", str(interval_s),
            "--opcua-endpoint", self.endpoint, mapping=folder / "mapping.yaml",
        )  # fmt: skip
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:  # the subscriber waits for its endpoint (it retries the connection)
        self._proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.DEVNULL, cwd=ROOT
        )

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            await self._proc.wait()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> float | None:
    """Prints the figures; returns the step overhead's p99 in ms (None for --serve-line)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--mapping", type=Path, default=ROOT / "mappings" / "ac_line.yaml")
    parser.add_argument(
        "--telemetry-load", type=int, default=0, metavar="N",
        help="add N changing telemetry registers to every station, polled and published every 100 ms",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, default=0, metavar="R",
        help="submit R orders a second, each at a seeded random instant of its slot (0: all at once)",
    )  # fmt: skip
    parser.add_argument(
        "--subscriber", choices=("auto", "node", "python"), default="auto",
        help="the loaded runs' OPC UA subscriber: node-opcua (auto: when installed) or Python asyncua",
    )  # fmt: skip
    parser.add_argument(
        "--telemetry-elsewhere", action="store_true",
        help="the telemetry load polled and published by a second bridge process, not the measured one",
    )  # fmt: skip
    parser.add_argument("--serve-line", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--telemetry-period", type=float, default=0.5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configure_logging("warning")
    mapping = load_mapping(args.mapping)
    if args.telemetry_load:
        mapping = with_telemetry(args.mapping, args.telemetry_load)
    if args.serve_line:
        asyncio.run(serve_line(mapping, args.telemetry_period))
        return None
    telemetry_s = 0.1 if args.telemetry_load else 0.0
    args.subscriber_cmd = subscriber_command(args.subscriber)
    args.subscriber_name = "node-opcua" if args.subscriber_cmd[0] != sys.executable else "Python asyncua"
    with (
        tempfile.TemporaryDirectory() as tmp,
        LineProcess(args.mapping, args.telemetry_load, telemetry_s or 0.5) as line,
    ):
        return run_line(args, mapping, line, Path(tmp), telemetry_s)


def run_line(
    args: argparse.Namespace, mapping: LineMapping, line: LineProcess, tmp: Path, telemetry_s: float
) -> float:
    deployed = apply_deployment(mapping, line.endpoints)
    elsewhere = None
    if args.telemetry_load and args.telemetry_elsewhere:
        data = telemetry_data(args.mapping, args.telemetry_load)
        elsewhere = TelemetryElsewhere(data, line.endpoints, tmp / "telemetry", telemetry_s)
    elapsed, bridge, journal, answers = asyncio.run(
        run_bridge(
            deployed, args.orders, tmp / "data", telemetry_s, args.rate, args.subscriber_cmd, elsewhere
        )
    )
    line.wait_reported(journal.closed_at, timeout_s=10)
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
        where = "a second bridge process" if elsewhere is not None else "the measured bridge"
        received = answers.get("received_per_s", float("nan"))
        print(f"telemetry load         {values:,} values/s polled and published every 100 ms by {where},"
              f" one subscriber ({args.subscriber_name}: {answers['subscriber_cpu_percent']:.0f} % of a core,"
              f" received {received:,.0f} values/s as the orders ran)")  # fmt: skip
    print(f"orders                 {args.orders} ({steps} station steps)")
    print(
        f"bridge                 {elapsed:.2f} s, {args.orders / elapsed:.1f} orders/s,"
        f" {steps / elapsed:.0f} steps/s"
    )
    print(f"modbus requests        {total} ({total / steps:.1f} per step)")
    print(f"step overhead          PLC done -> step recorded: p50 {percentile(overhead_ms, 50):.2f} ms,"
          f" p99 {percentile(overhead_ms, 99):.2f} ms ({len(overhead_ms)} steps)")  # fmt: skip
    probed = next(iter(mapping.stations))
    print(f"PLC answer (probe)     p50 {answers['p50_ms']:.2f} ms, p99 {answers['p99_ms']:.2f} ms, max"
          f" {answers['max_ms']:.1f} ms ({answers['reads']} status reads of {probed} by a bare client"
          " in a process of its own, same minutes: counted in the step overhead too)")  # fmt: skip
    commits = journal.commit_ms
    print(f"journal commits        p50 {percentile(commits, 50):.2f} ms, p99 {percentile(commits, 99):.2f}"
          f" ms, max {max(commits):.2f} ms ({len(commits)} awaited, off the loop)")  # fmt: skip
    print(f"bare pymodbus          {total} requests in {bare:.2f} s ({total / bare:.0f} req/s)")
    print(f"ratio bridge/bare      {elapsed / bare:.2f}")
    return percentile(overhead_ms, 99)


if __name__ == "__main__":
    main()
