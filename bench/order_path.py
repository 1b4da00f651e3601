"""The order path at scale, measured as an engineer would run it: `linebridge run --submit ...
--exit-when-idle` against the simulated line at zero cycle time in a process of its own, with and
without the OPC UA face; then the bridge restarted on the journal those orders left, against an
empty one: how long until an OPC UA client's first Read is answered, and what the retained
finished orders cost in memory. Every ratio is of two figures measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from asyncua import Client, ua

from bench.telemetry import free_port, rss_mb
from bridge.journal import JOURNAL_FILE

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "mappings" / "ac_line.yaml"


class Line:
    """`plc-sim serve --speed 0` in a process of its own, its endpoints in a deployment file."""

    def __init__(self, tmp: Path) -> None:
        self.deployment = tmp / "deployment.yaml"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Line:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "plc_sim", "--mapping", str(MAPPING), "--speed", "0",
             "--ephemeral", "--write-deployment", str(self.deployment), "--log-level", "warning"],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.deployment.exists():
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError("the simulated line did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.terminate()
        self._proc.wait(10)


def bridge_args(deployment: Path, data_dir: Path, *extra: str, mapping: Path = MAPPING) -> list[str]:
    """`linebridge run` in a process of its own, as an engineer would start it."""
    return [
        sys.executable, "-m", "bridge", "run", "--mapping", str(mapping),
        "--deployment", str(deployment), "--data-dir", str(data_dir), "--log-level", "warning", *extra,
    ]  # fmt: skip


def run_orders(line: Line, data_dir: Path, orders: Path, opcua: bool) -> float:
    """Seconds from start to exit of `linebridge run --submit orders --exit-when-idle`."""
    face = ["--opcua-endpoint", f"opc.tcp://127.0.0.1:{free_port()}/"] if opcua else ["--no-opcua"]
    args = bridge_args(line.deployment, data_dir, "--submit", str(orders), "--exit-when-idle", *face)
    began = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def journal_span(data_dir: Path) -> float:
    """Seconds from the first order's admission to the last one's completion, as the run's journal
    recorded them: the order path alone, with no start-up or shutdown of either run in it."""
    with contextlib.closing(sqlite3.connect(data_dir / JOURNAL_FILE)) as db:
        first, last = db.execute("SELECT min(created_at), max(completed_at) FROM orders").fetchone()
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


async def first_read(endpoint: str, deadline: float) -> None:
    """Until a client connects and reads the line's Orders folder."""
    while True:
        try:
            async with Client(endpoint, timeout=2) as client:
                ns = await client.get_namespace_index("urn:linebridge:ac_line")
                node = client.get_node(ua.NodeId("Plant.Lines.ac_line.Orders", ns))
                await node.read_browse_name()
                return
        except (OSError, TimeoutError, ua.UaError, ValueError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def restart(line: Line, data_dir: Path) -> tuple[float, float]:
    """(seconds from start to the first Read answered, the bridge's RSS in MB then)."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
    args = bridge_args(line.deployment, data_dir, "--opcua-endpoint", endpoint)
    began = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        asyncio.run(first_read(endpoint, time.monotonic() + 120))
        elapsed = time.perf_counter() - began
        time.sleep(1.0)  # what start-up queued is done
        return elapsed, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name, Line(Path(tmp_name)) as line:
        tmp = Path(tmp_name)
        orders = tmp / "orders.json"
        capacities = (9000, 12000, 18000, 24000)
        orders.write_text(json.dumps([
            {"order_id": f"P-{i:05}", "product": "AC-W", "options": {"capacity_btu": capacities[i % 4]}}
            for i in range(args.orders)
        ]))  # fmt: skip
        empty = tmp / "none.json"
        empty.write_text("[]")
        start_plain = run_orders(line, tmp / "warm", empty, opcua=False)
        start_opcua = run_orders(line, tmp / "warm", empty, opcua=True)
        plain = run_orders(line, tmp / "plain", orders, opcua=False) - start_plain
        with_opcua = run_orders(line, tmp / "opcua", orders, opcua=True) - start_opcua
        spans = journal_span(tmp / "plain"), journal_span(tmp / "opcua")
        empty_s, empty_mb = restart(line, tmp / "empty")
        full_s, full_mb = restart(line, tmp / "opcua")
    n = args.orders
    print(f"order path: {n} orders of 1 unit, 8-station line, simulator at zero cycle time (net of start-up)")
    print(f"  --no-opcua             {plain:.2f} s  {n / plain:.0f} units/s   (start-up {start_plain:.2f} s)")
    print(f"  OPC UA on              {with_opcua:.2f} s  {n / with_opcua:.0f} units/s"
          f"   (start-up {start_opcua:.2f} s)")  # fmt: skip
    print(f"  ratio OPC UA/--no-opcua  {with_opcua / plain:.2f}")
    print(f"  first admitted to last completed, from each run's journal: --no-opcua {spans[0]:.2f} s,"
          f" OPC UA on {spans[1]:.2f} s, ratio {spans[1] / spans[0]:.2f}")  # fmt: skip
    print(f"restart to first Read    empty journal {empty_s:.2f} s, {n} finished orders {full_s:.2f} s,"
          f" ratio {full_s / empty_s:.2f}")  # fmt: skip
    print(f"bridge memory (RSS)      empty journal {empty_mb:.0f} MB, {n} finished orders retained"
          f" {full_mb:.0f} MB (+{full_mb - empty_mb:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
