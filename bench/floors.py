"""The floors bench/telemetry.py compares the bridge with, each in a process of its own:

    python -m bench.floors modbus DEPLOYMENT REGISTERS INTERVAL   bare pymodbus block polling
    python -m bench.floors asyncua PORT VALUES INTERVAL            a bare asyncua server writing
                                                                    VALUES changing values per
                                                                    INTERVAL with write_attribute_value

Both print "ready" once running; the caller reads their CPU from /proc.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import yaml
from asyncua import Server, ua
from pymodbus.client import AsyncModbusTcpClient


async def modbus(deployment: str, registers: int, interval_s: float) -> None:
    stations = yaml.safe_load(open(deployment).read())["stations"]  # noqa: ASYNC230, SIM115 - read once at start
    clients = []
    for ep in stations.values():
        client = AsyncModbusTcpClient(ep["host"], port=ep["port"], timeout=2, retries=0)
        await client.connect()
        clients.append((client, ep.get("device_id", 1)))
    print("ready", flush=True)

    async def poll(client: AsyncModbusTcpClient, device_id: int) -> None:
        due = time.monotonic()
        while True:
            for start in range(0, registers, 125):
                count = min(125, registers - start)
                await client.read_input_registers(200 + start, count=count, device_id=device_id)
            due += interval_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    await asyncio.gather(*(poll(c, d) for c, d in clients))


async def opcua(port: int, values: int, interval_s: float) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    ns = await server.register_namespace("urn:bench:floor")
    folder = await server.nodes.objects.add_folder(ua.NodeId("Floor", ns), "Floor")
    nodes = [
        (
            await folder.add_variable(ua.NodeId(f"v{i}", ns), f"v{i}", ua.Variant(0, ua.VariantType.UInt16))
        ).nodeid
        for i in range(values)
    ]
    async with server:
        print("ready", flush=True)
        due = time.monotonic()
        while True:
            for nodeid in nodes:
                value = ua.DataValue(ua.Variant(random.randrange(65536), ua.VariantType.UInt16))
                await server.write_attribute_value(nodeid, value)
            due += interval_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    if kind == "modbus":
        asyncio.run(modbus(args[0], int(args[1]), float(args[2])))
    else:
        asyncio.run(opcua(int(args[0]), int(args[1]), float(args[2])))
