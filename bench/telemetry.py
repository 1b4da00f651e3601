"""Telemetry at plant scale (issue 11): values/s polled and published, missed polls, and the bridge's
CPU and RSS read from /proc, with an OPC UA subscriber on every telemetry variable in another
process and the simulated PLCs in a third, all in one run.

    python -m bench.telemetry [--seconds 20] [--warmup 5] [--only NAME] [--soak SECONDS]

Each workload gets a generated mapping: N stations of one type with M uint16 telemetry fields, a
share of which the simulator changes on every refresh (the rest stay constant).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.subscriber import command as subscriber_command

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Workload:
    name: str
    stations: int
    registers: int
    interval_s: float
    changing: float = 1.0  # share of values the simulator changes on every refresh
    history: bool = True
    floors: bool = False  # also measure bare pymodbus polling and a bare asyncua server on it

    @property
    def values_per_s(self) -> float:
        return self.stations * self.registers / self.interval_s


WORKLOADS = [
    Workload("10x100 @100ms, all change", 10, 100, 0.1, floors=True),
    Workload("10x100 @100ms, no history", 10, 100, 0.1, history=False),
    Workload("10x100 @100ms, 10% change", 10, 100, 0.1, 0.1),
    Workload("50x20 @100ms", 50, 20, 0.1),
    Workload("100x100 @1s", 100, 100, 1.0),
    Workload("10x20 @20ms", 10, 20, 0.02),
]


def mapping_for(w: Workload) -> dict:
    changing = round(w.registers * w.changing)
    telemetry = {
        f"t{i:03d}": {
            "table": "input",
            "address": 200 + i,
            "type": "uint16",
            "min": 0,
            "max": 65535,
            "sim": {"nominal": 30000, "noise": 20000} if i < changing else {"constant": 1234},
            "history": w.history,
        }
        for i in range(w.registers)
    }
    names = [f"s{i:03d}" for i in range(w.stations)]
    return {
        "line": {"name": "bench_line", "description": "generated for bench/telemetry.py"},
        "station_types": {"probe": {"cycle_time_s": 0, "telemetry": telemetry}},
        "stations": {n: {"type": "probe", "endpoint": {"port": 40000 + i}} for i, n in enumerate(names)},
        "products": {"P": {"route": [names[0]], "options": {}}},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.1)


def run_workload(
    w: Workload, seconds: float, warmup: float, soak: float = 0, client: tuple[str, ...] = ()
) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="lb-tel-") as tmp:
        folder = Path(tmp)
        (folder / "line.yaml").write_text(yaml.safe_dump(mapping_for(w)))
        deployment = folder / "deployment.yaml"
        procs: list[subprocess.Popen] = []
        with (folder / "bridge.err").open("wb") as bridge_err, (folder / "client.err").open("wb") as err:
            try:
                procs.append(subprocess.Popen(
                    [BIN / "plc-sim", "--mapping", folder / "line.yaml", "--ephemeral", "--speed", "0",
                     "--telemetry-period", str(w.interval_s), "--log-level", "warning",
                     "--write-deployment", deployment],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
                wait_for(lambda: deployment.exists() and deployment.stat().st_size > 0, 60, "plc-sim start")
                endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
                bridge = subprocess.Popen(
                    [BIN / "linebridge", "run", "--mapping", folder / "line.yaml", "--deployment", deployment,
                     "--data-dir", folder / "data", "--telemetry-interval", str(w.interval_s),
                     "--opcua-endpoint", endpoint, "--log-level", "warning"],
                    stdout=subprocess.DEVNULL, stderr=bridge_err,
                )  # fmt: skip
                procs.append(bridge)
                rows = [
                    measure(w.name, w, bridge, endpoint, err, folder, seconds, warmup, soak, client=client)
                ]
                bridge.terminate()
                bridge.wait(10)
                if w.floors:
                    rows += floors(w, deployment, seconds, warmup, procs, err, folder, client)
                return rows
            finally:
                for proc in reversed(procs):
                    proc.terminate()
                for proc in procs:
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def measure(
    name: str, w: Workload, server: subprocess.Popen, endpoint: str, err: Any, folder: Path,
    seconds: float, warmup: float, soak: float = 0, *, floor: bool = False, client: tuple[str, ...] = (),
) -> dict:  # fmt: skip
    """Subscribe to every telemetry variable of `server` from another process and read the
    server's CPU and RSS from /proc over `seconds` after `warmup`."""
    client = client or tuple(subscriber_command("python"))
    args = [*client, endpoint, str(w.interval_s), *(["floor"] if floor else [])]
    subscriber = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, text=True)
    try:
        assert subscriber.stdout is not None
        first_line = subscriber.stdout.readline()
        if not first_line:
            logs = "".join(f.read_text()[-2000:] for f in (folder / "client.err", folder / "bridge.err"))
            raise RuntimeError(f"subscriber failed: {logs}")
        ready = json.loads(first_line)  # {"subscribed": n}
        time.sleep(warmup)
        counts = [json.loads(subscriber.stdout.readline())]  # one line a second: {"values": total, ...}
        profiler = _profiler(server.pid, max(seconds, soak), name)
        cpu0, t0 = cpu_s(server.pid), time.monotonic()
        rss_trace = [rss_mb(server.pid)]
        while time.monotonic() - t0 < max(seconds, soak):
            counts.append(json.loads(subscriber.stdout.readline()))
            if soak and len(counts) % 60 == 0:
                rss_trace.append(rss_mb(server.pid))
        cpu1, t1 = cpu_s(server.pid), time.monotonic()
        rss_trace.append(rss_mb(server.pid))
        if profiler is not None:
            profiler.wait(30)
    finally:
        subscriber.terminate()
        subscriber.wait(10)
    first, last = counts[0], counts[-1]
    span = last["at"] - first["at"]
    return {
        "workload": name,
        "subscribed": ready["subscribed"],
        "offered_values_per_s": w.values_per_s,
        "published_values_per_s": (last["values"] - first["values"]) / span,
        "polls_per_s": (last["polls"] - first["polls"]) / span if last["polls"] else None,
        "missed_polls": last.get("missed", 0) - first.get("missed", 0),
        "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
        "rss_mb": rss_trace[-1],
        "rss_trace_mb": rss_trace,
    }


def _profiler(pid: int, seconds: float, name: str) -> subprocess.Popen | None:
    """With LB_PROFILE=DIR, py-spy samples the measured process over the window (collapsed stacks,
    one file per workload); py-spy is not a project dependency: `pip install py-spy`."""
    folder = os.environ.get("LB_PROFILE")
    if not folder:
        return None
    out = Path(folder) / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + ".txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [BIN / "py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw",
         "--rate", "400", "--output", out, "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def floors(
    w: Workload, deployment: Path, seconds: float, warmup: float, procs: list, err: Any, folder: Path,
    client: tuple[str, ...] = (),
) -> list[dict]:  # fmt: skip
    """Bare pymodbus block polling of the same PLCs, and a bare asyncua server writing as many
    values with write_attribute_value to one subscriber, measured the same way."""
    poller = subprocess.Popen(
        [sys.executable, "-m", "bench.floors", "modbus", str(deployment), str(w.registers),
         str(w.interval_s)],
        stdout=subprocess.PIPE, stderr=err, cwd=ROOT, text=True,
    )  # fmt: skip
    procs.append(poller)
    assert poller.stdout is not None
    assert poller.stdout.readline().strip() == "ready"
    time.sleep(warmup)
    cpu0, t0 = cpu_s(poller.pid), time.monotonic()
    time.sleep(seconds)
    polling = {
        "workload": "  floor: bare pymodbus polling", "offered_values_per_s": w.values_per_s,
        "published_values_per_s": None, "polls_per_s": None, "missed_polls": "-",
        "cpu_percent": 100 * (cpu_s(poller.pid) - cpu0) / (time.monotonic() - t0),
        "rss_mb": rss_mb(poller.pid),
    }  # fmt: skip
    poller.terminate()
    port = free_port()
    values = str(w.stations * w.registers)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.floors", "asyncua", str(port), values, str(w.interval_s)],
        stdout=subprocess.PIPE, stderr=err, cwd=ROOT, text=True,
    )  # fmt: skip
    procs.append(server)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    serving = measure(
        "  floor: bare asyncua server", w, server, endpoint, err, folder, seconds, warmup, floor=True,
        client=client,
    )  # fmt: skip
    return [polling, serving]


def table(rows: list[dict]) -> str:
    head = (
        f"| {'workload':<31} | values/s offered | published | polls/s | missed | CPU % of a core | RSS MB |"
    )
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        polls = f"{r['polls_per_s']:.1f}" if r["polls_per_s"] is not None else "-"
        offered, published = r["offered_values_per_s"], r["published_values_per_s"]
        published_text = f"{published:>9,.0f}" if published is not None else f"{'-':>9}"
        lines.append(
            f"| {r['workload']:<31} | {offered:>8,.0f} | {published_text} |"
            f" {polls:>7} | {r['missed_polls']:>6} | {r['cpu_percent']:>6.1f} | {r['rss_mb']:>6.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--only", help="run the workloads whose name contains this")
    parser.add_argument(
        "--soak", type=float, default=0, help="run the first workload this long, RSS each minute"
    )
    parser.add_argument(
        "--subscriber", choices=("python", "node", "auto"), default="python",
        help="the measuring OPC UA client: Python asyncua (the figures so far), node-opcua, or auto",
    )  # fmt: skip
    args = parser.parse_args(argv)
    chosen = [w for w in WORKLOADS if args.only is None or args.only in w.name]
    if args.soak:
        chosen = chosen[:1]
    client = tuple(subscriber_command(args.subscriber))
    rows = [row for w in chosen for row in run_workload(w, args.seconds, args.warmup, args.soak, client)]
    print(table(rows))
    if args.soak:
        print("RSS over the soak (MB, each minute):", ", ".join(f"{v:.0f}" for v in rows[0]["rss_trace_mb"]))


if __name__ == "__main__":
    main()
