"""`make chaos MINUTES=N`: orders through a faulty network for N minutes, then a summary.

Every PLC of the default line sits behind a seeded fault-injecting proxy (plc_sim/proxy.py) with
the fault mix of issue 12 (`--severity 2` doubles it). Prints orders, steps, faults injected by
kind, retries, outages declared and duplicated steps (by the PLCs' own counts: must be 0).
The bridge runs in this process; SIGKILL restarts are not part of this soak yet.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

from bridge.logging import configure_logging
from bridge.mapping import apply_deployment, load_mapping
from bridge.mapping.model import Endpoint
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from plc_sim.proxy import ISSUE_12_MIX, FaultyLink

ROOT = Path(__file__).resolve().parent.parent


async def soak(minutes: float, severity: float) -> None:
    mapping = load_mapping(ROOT / "mappings" / "ac_line.yaml")
    mix = ISSUE_12_MIX.scaled(severity)
    async with SimulatedLine(mapping, ports=dict.fromkeys(mapping.stations, 0), speed=0, seed=3) as line:
        proxies = {
            name: FaultyLink(("127.0.0.1", plc.port), mix, seed=i)
            for i, (name, plc) in enumerate(line.plcs.items())
        }
        for proxy in proxies.values():
            await proxy.start()
        endpoints = {
            name: Endpoint(port=p.port, device_id=line[name].device_id) for name, p in proxies.items()
        }
        with tempfile.TemporaryDirectory() as tmp:
            bridge = Bridge(
                apply_deployment(mapping, endpoints),
                BridgeSettings(data_dir=Path(tmp), telemetry_interval_s=0.5, request_timeout_s=0.5),
            )
            await bridge.start()
            submitted, deadline = 0, time.monotonic() + minutes * 60
            try:
                while time.monotonic() < deadline:
                    for _ in range(10):
                        await bridge.submit(f"S-{submitted}", "AC-W", {})
                        submitted += 1
                    async with asyncio.timeout(300):  # a wedged link would stop the soak here
                        await bridge.wait_idle()
                states = Counter(str(bridge.get(f"S-{i}").state) for i in range(submitted))
            finally:
                await bridge.stop()
                for proxy in proxies.values():
                    await proxy.stop()
    faults: Counter[str] = Counter()
    for proxy in proxies.values():
        faults.update(proxy.injected)
    steps = sum(sum(plc.executed.values()) for plc in line.plcs.values())
    duplicates = sum(n - 1 for plc in line.plcs.values() for n in plc.executed.values() if n > 1)
    print(f"minutes         {minutes:g} at {severity:g}x the issue-12 fault mix")
    print(f"orders          {submitted}: {dict(states)}")
    print(f"steps executed  {steps}")
    print(f"faults injected {sum(faults.values())}: {dict(faults)}")
    print(f"retries         {sum(link.counters.retries for link in bridge.links.values())}")
    print(f"outages         {sum(link.counters.outages for link in bridge.links.values())}")
    print(f"duplicated steps {duplicates} (must be 0)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--severity", type=float, default=1)
    args = parser.parse_args()
    configure_logging("warning")
    asyncio.run(soak(args.minutes, args.severity))


if __name__ == "__main__":
    main()
