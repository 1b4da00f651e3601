"""A running bridge with its OPC UA face over the simulated line, for OPC UA tests."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua

from bridge.domain.admission import OpenOrderLimits
from bridge.mapping import LineMapping, apply_deployment
from bridge.mapping.model import Endpoint
from bridge.opcua.face import OpcUaFace, OpcUaSettings
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from plc_sim.proxy import FaultMix, FaultyLink
from tests.integration.loopback import loopback_server


@dataclass
class Rig:
    line: SimulatedLine
    bridge: Bridge
    face: OpcUaFace
    client: Client
    ns: int
    types_ns: int
    url: str
    proxies: dict[str, FaultyLink]

    def node(self, path: str) -> Node:
        return self.client.get_node(ua.NodeId(path, self.ns))

    @property
    def line_node(self) -> Node:
        return self.node("Plant.Lines.ac_line")

    async def call(self, method: str, *args: ua.Variant) -> ua.CallMethodResult:
        """A raw Call, so the test sees the status and the per-argument results as sent."""
        request = ua.CallMethodRequest(
            ObjectId=self.line_node.nodeid,
            MethodId=ua.NodeId(f"Plant.Lines.ac_line.{method}", self.ns),
            InputArguments=list(args),
        )
        (result,) = await self.client.uaclient.call([request])
        return result


def s(value: str) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.String)


class Events:
    """The events a subscription received, to wait on by what they say (never by time)."""

    def __init__(self, timeout_s: float = 10) -> None:
        self.events: list[Any] = []
        self.arrived = asyncio.Event()
        self.timeout_s = timeout_s  # the longest `until` waits unless told

    def event_notification(self, event: Any) -> None:
        self.events.append(event)
        self.arrived.set()

    async def until(self, predicate: Callable[[Any], bool], timeout_s: float | None = None) -> Any:
        """The first event received that `predicate` holds for, waiting for it (bounded)."""
        async with asyncio.timeout(timeout_s or self.timeout_s):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def opcua_rig(
    mapping: LineMapping,
    data_dir: Path,
    *,
    anonymous: bool = True,
    mapping_file: Path | None = None,
    proxied: tuple[str, ...] = (),
    open_orders: OpenOrderLimits | None = None,
    journal_reserve_mb: float = 64,
    **opcua: Any,
):
    """`mapping_file`: what the bridge reloads (with a deployment file pointing at the simulator);
    `proxied`: stations the bridge reaches through a network proxy (`rig.proxies`, faultless until
    a test makes it otherwise, or stops it to cut the PLC off)."""
    ports = dict.fromkeys(mapping.stations, 0)
    async with SimulatedLine(mapping, ports=ports, speed=0, seed=5, telemetry_period_s=0.05) as line:
        deployment = None
        if mapping_file is not None:
            deployment = mapping_file.with_name("deployment.yaml")
            line.write_deployment(deployment)
        settings = BridgeSettings(
            data_dir=data_dir,
            telemetry_interval_s=0.05,
            backoff_max_s=0.2,
            request_timeout_s=0.5,
            mapping_file=mapping_file,
            deployment_file=deployment,
            open_orders=open_orders or OpenOrderLimits(),
            journal_reserve_mb=journal_reserve_mb,
        )
        endpoints, proxies = line.endpoints(), {}
        for name in proxied:
            proxies[name] = FaultyLink((endpoints[name].host, endpoints[name].port), FaultMix())
            await proxies[name].start()
            endpoints[name] = Endpoint(port=proxies[name].port, device_id=endpoints[name].device_id)
        bridge = Bridge(apply_deployment(mapping, endpoints), settings)
        # Port 0: the server binds a free port itself (no race with other processes for it).
        face = OpcUaFace(bridge, OpcUaSettings(endpoint="opc.tcp://127.0.0.1:0/", **opcua))
        bridge.before_links.append(face.prepare)  # as `linebridge run` does
        await bridge.start()
        try:
            await face.start()
            url = face.endpoint
            client = Client(url, timeout=10)
            try:
                ns = types_ns = 0
                if anonymous:  # a secured server refuses anonymous sessions: tests connect their own
                    await client.connect()
                    ns = await client.get_namespace_index(f"urn:linebridge:{mapping.line.name}")
                    types_ns = await client.get_namespace_index("urn:linebridge:types")
                yield Rig(line, bridge, face, client, ns, types_ns, url, proxies)
            finally:
                if anonymous:
                    await bounded("client disconnect", client.disconnect())
                await bounded("OPC UA server stop", face.stop())
        finally:
            await bounded("bridge stop", bridge.stop())
            for proxy in proxies.values():
                await proxy.stop()


async def bounded(what: str, work: Coroutine[Any, Any, None], timeout_s: float = 20) -> None:
    """Teardown that fails fast, naming the step and showing the tasks, instead of hanging.

    The work runs as its own task and is not awaited past the limit: a library that swallows
    cancellation cannot hold the test hostage."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        for other in asyncio.all_tasks():
            other.print_stack(limit=8, file=sys.stderr)
        raise AssertionError(f"{what} did not finish within {timeout_s} s")
    task.result()


@asynccontextmanager
async def from_another_host(url: str, source: str = "127.0.0.2") -> AsyncIterator[str]:
    """`url` as a client on another host reaches it: a TCP forwarder whose connections to the
    server leave from `source` (loopback holds all of 127/8), so the server sees that address."""
    host, port = url.removeprefix("opc.tcp://").rstrip("/").rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async with loopback_server(forward) as local:
        yield f"opc.tcp://127.0.0.1:{local}/"
