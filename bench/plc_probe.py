"""A bare pymodbus client in a process of its own for bench/throughput.py: reads one station's
status block every 5 ms until its stdin closes, then prints its answer times (JSON). Beside the
step overhead it says how long the simulated PLC itself took to answer in the same minutes, which
"PLC done → step recorded" counts too."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from pymodbus.client import AsyncModbusTcpClient

from bridge.handshake import STATUS_REGISTERS


async def main(host: str, port: int, device_id: int) -> None:
    client = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
    await client.connect()
    answers: list[float] = []
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print("probing", flush=True)
    try:
        while not stdin_closed.done():
            began = time.monotonic()
            reply = await client.read_input_registers(0, count=STATUS_REGISTERS, device_id=device_id)
            if not reply.isError():
                answers.append((time.monotonic() - began) * 1000)
            await asyncio.sleep(0.005)
    finally:
        client.close()
    cuts = statistics.quantiles(answers, n=100, method="inclusive") if len(answers) > 1 else answers * 99
    print(json.dumps({"reads": len(answers), "p50_ms": cuts[49], "p99_ms": cuts[98], "max_ms": max(answers)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
