"""An OPC UA client in a process of its own for bench/telemetry.py and bench/throughput.py:
subscribes to every telemetry variable of the bridge's first line and prints, once a second, how
many data changes arrived and the stations' poll counters (JSON lines on stdout).
bench/subscriber.mjs is the same client in node-opcua."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

from asyncua import Client, Node, ua

ROOT = Path(__file__).resolve().parent.parent


def command(which: str) -> list[str]:
    """The subscriber to start (endpoint and interval follow): "python", "node" (node-opcua, which
    `make tools` installs under tests/node), or "auto": node-opcua when it is installed."""
    node = shutil.which("node")
    installed = (ROOT / "tests" / "node" / "node_modules" / "node-opcua").is_dir()
    if which == "node" or (which == "auto" and node and installed):
        if not (node and installed):
            raise SystemExit("--subscriber node: node and tests/node's node-opcua are needed (make tools)")
        return [node, str(ROOT / "bench" / "subscriber.mjs")]
    return [sys.executable, "-m", "bench.subscriber"]


class Counter:
    def __init__(self) -> None:
        self.values = 0

    def datachange_notification(self, node, value, data) -> None:
        self.values += 1


async def children(node):
    return {
        ref.BrowseName.Name: Node(node.session, ref.NodeId) for ref in await node.get_children_descriptions()
    }


async def child(node, name: str):
    return (await children(node))[name]


async def main(endpoint: str, interval_s: float, floor: bool = False) -> None:
    client = Client(endpoint, timeout=30)
    for _ in range(300):
        try:
            await client.connect()
            break
        except (OSError, TimeoutError, ua.UaError):
            await asyncio.sleep(0.2)
    variables, diagnostics = [], []
    if floor:  # bench/floors.py's bare server
        variables = list((await children(await child(client.nodes.objects, "Floor"))).values())
    else:
        lines = await child(await child(client.nodes.objects, "Plant"), "Lines")
        (line,) = await lines.get_children()
        for station in await (await child(line, "Stations")).get_children():
            variables += await (await child(station, "Telemetry")).get_children()
            names = await children(await child(station, "Diagnostics"))
            diagnostics.append((names.get("PollsDone"), names.get("PollsMissed")))
    counter = Counter()
    subscription = await client.create_subscription(interval_s * 1000, counter)
    for i in range(0, len(variables), 500):
        await subscription.subscribe_data_change(variables[i : i + 500], queuesize=10)
    print(json.dumps({"subscribed": len(variables)}), flush=True)
    counters = [node for pair in diagnostics for node in pair if node is not None]
    while True:
        await asyncio.sleep(1)
        # one Read request for all the counters: the measuring client should load the bridge little
        read = dict(zip(counters, await client.read_values(counters) if counters else [], strict=True))
        polls = sum(read.get(done, 0) for done, _ in diagnostics)
        missed = sum(read.get(miss, 0) for _, miss in diagnostics)
        line_out = {"at": time.monotonic(), "values": counter.values, "polls": polls, "missed": missed}
        print(json.dumps(line_out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), floor=sys.argv[3:] == ["floor"]))
