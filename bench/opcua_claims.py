"""What OPC UA clients can make the bridge hold: N anonymous sessions, each asking for M monitored
items that never publish, against a bridge with the default caps and one with the anonymous cap
raised to N (then the per-session and server-wide item caps hold). Prints accepted sessions and
items and the bridge's RSS before, under and after the clients vanish without closing.

    .venv/bin/python -m bench.opcua_claims [--sessions 200] [--items 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import tempfile
import time
from pathlib import Path

from asyncua import Client, ua

from bench.telemetry import BIN, ROOT, free_port, rss_mb, wait_for

TIMEOUT_S = 10  # the bridge's --max-session-timeout here: abandoned sessions go after it


class Quiet:
    def datachange_notification(self, node: object, value: object, data: object) -> None:
        pass


async def claim(endpoint: str, sessions: int, items: int) -> tuple[list[Client], int, int]:
    clients, accepted_items = [], 0
    for _ in range(sessions):
        client = Client(endpoint, timeout=10)
        try:
            await client.connect()
        except (ua.UaStatusCodeError, OSError, TimeoutError):
            continue
        clients.append(client)
        ns = await client.get_namespace_index("urn:linebridge:ac_line")
        nodes = [client.get_node(ua.NodeId(f"Plant.Lines.ac_line.Stations.{s}.CycleCount", ns))
                 for s in ("chassis", "coil", "compressor", "charge")]  # fmt: skip
        try:
            sub = await client.create_subscription(60_000, Quiet())  # publishes nothing for a minute
            results = await sub.subscribe_data_change([nodes[i % 4] for i in range(items)], queuesize=100)
            accepted_items += sum(1 for r in results if isinstance(r, int))
        except ua.UaStatusCodeError:
            pass
    return clients, len(clients), accepted_items


async def claim_and_vanish(
    endpoint: str, sessions: int, items: int, pid: int
) -> tuple[int, int, float, float]:
    clients, opened, accepted = await claim(endpoint, sessions, items)
    under = rss_mb(pid)
    for client in clients:  # vanish: the sockets close, the sessions are never closed
        protocol = client.uaclient.protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
    await asyncio.sleep(TIMEOUT_S * 2)
    return opened, accepted, under, rss_mb(pid)


def run(label: str, extra: list[str], sessions: int, items: int) -> None:
    with tempfile.TemporaryDirectory(prefix="lb-claims-") as tmp:
        folder = Path(tmp)
        deployment = folder / "deployment.yaml"
        sim = subprocess.Popen(
            [BIN / "plc-sim", "--mapping", ROOT / "mappings/ac_line.yaml", "--ephemeral", "--speed", "0",
             "--log-level", "warning", "--write-deployment", deployment],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: deployment.exists() and deployment.stat().st_size > 0, 60, "plc-sim start")
            endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
            bridge = subprocess.Popen(
                [BIN / "linebridge", "run", "--mapping", ROOT / "mappings/ac_line.yaml", "--deployment",
                 deployment, "--data-dir", folder / "data", "--opcua-endpoint", endpoint, "--log-level",
                 "warning", "--max-session-timeout", str(TIMEOUT_S), *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                time.sleep(5)  # start-up (the address space) before the first figure
                before = rss_mb(bridge.pid)
                claims = claim_and_vanish(endpoint, sessions, items, bridge.pid)
                opened, accepted, under, after = asyncio.run(claims)
                print(f"| {label} | {opened}/{sessions} | {accepted:,}/{sessions * items:,} |"
                      f" {before:.0f} | {under:.0f} (+{under - before:.0f}) | {after:.0f} |")  # fmt: skip
            finally:
                bridge.terminate()
                bridge.wait(20)
        finally:
            sim.terminate()
            sim.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # each refusal is expected here
    print("| caps | sessions opened | items accepted | RSS before MB | RSS under claims MB |"
          " RSS after they vanish MB |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    run("defaults (10 anonymous)", [], args.sessions, args.items)
    cap = str(args.sessions)
    run(f"{cap} anonymous allowed, from one host", [
        "--max-sessions", cap, "--max-anonymous-sessions", cap,
        "--max-sessions-per-client", cap, "--max-connections-per-client", cap,
    ], args.sessions, args.items)  # fmt: skip


if __name__ == "__main__":
    main()
