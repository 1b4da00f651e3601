"""`make chaos MINUTES=N`: orders through a faulty network with the bridge SIGKILLed at random.

Every PLC of the default line sits behind a seeded fault-injecting proxy (plc_sim/proxy.py) with
the fault mix of issue 12 (`--severity 2` doubles it). The bridge runs as its own process
(`linebridge run --no-opcua --exit-when-idle`) on one journal; while it works it is SIGKILLed at
random moments and started again (it takes over the PLCs in whatever handshake state they are).
Orders come in rounds of ten; a round that does not end within `--round-timeout` means a wedged
link. The summary counts from the PLCs' own registers (steps executed, duplicates: must be 0),
from the proxies (faults by kind, every write forwarded: none outside the mapping), from the
journal (every order completed or faulted with a reason) and from the bridge's logs (outages).
tests/integration/test_chaos.py runs the same for fifty orders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bridge.domain.model import Order, OrderState
from bridge.handshake import COMMAND_REGISTERS
from bridge.journal import JOURNAL_FILE, SqliteJournal
from bridge.logging import configure_logging
from bridge.mapping import load_mapping
from bridge.mapping.model import LineMapping
from plc_sim.line import SimulatedLine
from plc_sim.proxy import ISSUE_12_MIX, FaultMix, FaultyLink

ROOT = Path(__file__).resolve().parent.parent
CAPACITIES = (9000, 12000, 18000, 24000)


class Wedged(RuntimeError):
    """A round of orders did not finish in time: some link made no progress."""


@dataclass
class ChaosReport:
    orders: dict[str, Order | None] = field(default_factory=dict)  # as the journal has them
    kills: int = 0
    runs: int = 0
    executed: dict[str, dict[int, int]] = field(default_factory=dict)  # station → seq → times run
    reexecuted: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    undeclared_writes: list[tuple[str, int, int, int]] = field(default_factory=list)
    outages: int = 0

    @property
    def steps(self) -> int:
        return sum(sum(runs.values()) for runs in self.executed.values())

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for runs in self.executed.values() for n in runs.values() if n > 1)

    def states(self) -> Counter[str]:
        return Counter(str(o.state) if o is not None else "lost" for o in self.orders.values())

    def unexplained(self) -> list[str]:
        """Orders neither completed nor faulted with a result code."""
        return [
            order_id
            for order_id, o in self.orders.items()
            if o is None
            or not (
                o.state == OrderState.COMPLETED or (o.state == OrderState.FAULTED and o.result_code)
            )
        ]


def declared_writes(mapping: LineMapping, station: str) -> set[tuple[str, int]]:
    """(table, address) the bridge may write on a station: command block, heartbeat, parameters, setpoints."""
    kind = mapping.station_type(station)
    fields = mapping.resolved_fields(station)
    allowed = {("holding", kind.handshake.command_address + i) for i in range(COMMAND_REGISTERS)}
    if kind.handshake.heartbeat is not None:
        allowed.add(("holding", kind.handshake.heartbeat.address))
    for name in (*kind.parameters, *kind.setpoints):
        f = fields[name]
        allowed |= {(f.table, f.address + i) for i in range(f.register_count)}
    return allowed


async def chaos(
    folder: Path,
    *,
    rounds: int | None = None,
    minutes: float | None = None,
    mix: FaultMix = ISSUE_12_MIX,
    seed: int = 1,
    kill_after_s: tuple[float, float] = (0.5, 2.0),
    round_size: int = 10,
    round_timeout_s: float = 300.0,
    mapping_file: Path = ROOT / "mappings" / "ac_line.yaml",
    kills_per_round: int | None = None,
) -> ChaosReport:
    """Rounds of orders until `rounds` are done or `minutes` have passed (whichever is given).

    `kills_per_round`: after this many SIGKILLs a round's next run is left to finish; without it a
    slow machine, whose bridge takes longer to start than the kill window, can spend minutes on
    runs killed before they did anything (the soak leaves it unset)."""
    mapping = load_mapping(mapping_file)
    rng = random.Random(seed)
    report = ChaosReport()
    ports = dict.fromkeys(mapping.stations, 0)
    deadline = time.monotonic() + minutes * 60 if minutes is not None else None
    async with SimulatedLine(mapping, ports=ports, speed=0, seed=seed) as line:
        proxies = {
            name: FaultyLink(("127.0.0.1", plc.port), mix, seed=seed * 100 + i)
            for i, (name, plc) in enumerate(line.plcs.items())
        }
        for proxy in proxies.values():
            await proxy.start()
        try:
            deployment = {
                "stations": {
                    name: {"host": "127.0.0.1", "port": p.port, "device_id": line[name].device_id}
                    for name, p in proxies.items()
                }
            }
            (folder / "deployment.yaml").write_text(yaml.safe_dump(deployment))
            done = 0
            while (rounds is None or done < rounds) and (deadline is None or time.monotonic() < deadline):
                batch = [
                    {"order_id": f"X-{done:03}-{i:02}", "product": "AC-W",
                     "options": {"capacity_btu": CAPACITIES[(done + i) % 4]}}
                    for i in range(round_size)
                ]  # fmt: skip
                orders_file = folder / f"orders-{done:03}.json"
                orders_file.write_text(json.dumps(batch))
                report.orders.update(dict.fromkeys(o["order_id"] for o in batch))
                await _run_round(
                    folder, mapping_file, orders_file, rng, kill_after_s, round_timeout_s, report,
                    kills_per_round,
                )  # fmt: skip
                done += 1
        finally:
            for proxy in proxies.values():
                await proxy.stop()
        for name, plc in line.plcs.items():
            report.executed[name] = dict(plc.executed)
            report.reexecuted += plc.status.reexecuted_count
            report.faults.update(proxies[name].injected)
            allowed = declared_writes(mapping, name)
            for code, address, count in proxies[name].writes:
                table = "coil" if code in (5, 15) else "holding"
                if not {(table, address + i) for i in range(count)} <= allowed:
                    report.undeclared_writes.append((name, code, address, count))
    journal = SqliteJournal(folder / "data" / JOURNAL_FILE)
    try:
        report.orders = {order_id: journal.load_order(order_id) for order_id in report.orders}
    finally:
        journal.close()
    report.outages = _count_outages(folder)
    return report


def _count_outages(folder: Path) -> int:
    """Stations declared offline, from the `station_unavailable` lines of every bridge run's log."""
    logs = folder.glob("bridge-*.log")
    return sum(log.read_text(errors="replace").count("station_unavailable") for log in logs)


async def _run_round(
    folder: Path,
    mapping_file: Path,
    orders_file: Path,
    rng: random.Random,
    kill_after_s: tuple[float, float],
    timeout_s: float,
    report: ChaosReport,
    kills_per_round: int | None = None,
) -> None:
    """Start the bridge on the round's orders; SIGKILL it at random and start it again, until it
    exits by itself with every order done."""
    kills = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                process = await _start_bridge(folder, mapping_file, orders_file, report.runs)
                report.runs += 1
                capped = kills_per_round is not None and kills >= kills_per_round
                try:
                    async with asyncio.timeout(None if capped else rng.uniform(*kill_after_s)):
                        code = await process.wait()
                except TimeoutError:
                    process.send_signal(signal.SIGKILL)
                    await process.wait()
                    report.kills += 1
                    kills += 1
                    continue
                if code != 0:
                    log = (folder / f"bridge-{report.runs - 1}.log").read_text(errors="replace")
                    raise RuntimeError(f"the bridge exited with {code}: {log[-3000:]}")
                return
    except TimeoutError:
        raise Wedged(f"{orders_file.name} not done within {timeout_s} s") from None


async def _start_bridge(
    folder: Path, mapping_file: Path, orders_file: Path, run: int
) -> asyncio.subprocess.Process:
    with (folder / f"bridge-{run}.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--mapping", str(mapping_file),
            "--deployment", str(folder / "deployment.yaml"), "--data-dir", str(folder / "data"),
            "--submit", str(orders_file), "--exit-when-idle", "--no-opcua", "--telemetry-interval", "0.5",
            "--request-timeout", "0.5", "--log-level", "warning",
            stdout=asyncio.subprocess.DEVNULL, stderr=log, cwd=ROOT,
        )  # fmt: skip


def summary(report: ChaosReport, title: str) -> str:
    return "\n".join(
        [
            title,
            f"orders           {len(report.orders)}: {dict(report.states())}",
            f"not explained    {len(report.unexplained())} (must be 0: completed, or faulted with a reason)",
            f"steps executed   {report.steps}",
            f"bridge runs      {report.runs}, SIGKILLed {report.kills} times",
            f"faults injected  {sum(report.faults.values())}: {dict(report.faults)}",
            f"outages declared {report.outages}",
            f"duplicated steps {report.duplicates} (must be 0), re-executions {report.reexecuted}",
            f"undeclared writes {len(report.undeclared_writes)} (must be 0)",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--severity", type=float, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging("warning")
    with tempfile.TemporaryDirectory(prefix="lb-chaos-") as tmp:
        try:
            report = asyncio.run(
                chaos(Path(tmp), minutes=args.minutes, mix=ISSUE_12_MIX.scaled(args.severity), seed=args.seed)
            )
        except Wedged as exc:
            sys.exit(f"WEDGED: {exc}")
    title = f"minutes          {args.minutes:g} at {args.severity:g}x the issue-12 mix (seed {args.seed})"
    print(summary(report, title))
    bad = report.duplicates or report.reexecuted or report.undeclared_writes or report.unexplained()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
