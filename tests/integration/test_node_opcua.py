"""Interoperability: node-opcua, an independent OPC UA stack, browses, reads, calls and listens."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.opcua_rig import opcua_rig

pytestmark = [pytest.mark.interop, pytest.mark.slow]


async def test_node_opcua_browses_reads_submits_and_gets_events(ac_mapping, tmp_path, node_client):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        process = await asyncio.create_subprocess_exec(
            *node_client, rig.url, "NODE-1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(90):
            out, err = await process.communicate()
        assert process.returncode == 0, err.decode()[-3000:]
        # node-opcua may log its own notices on stdout too: the summary is the JSON line.
        (line,) = [text for text in out.decode().splitlines() if text.startswith('{"nodes"')]
        summary = json.loads(line)
        placed = rig.bridge.get("NODE-1")
        assert placed.options["panel_color"] == "graphite"

    assert summary["call"] == {"status": "Good", "output": f"ns={rig.ns};s=Plant.Lines.ac_line.Orders.NODE-1"}
    assert summary["variables"] > 200
    assert summary["plantVariables"] > 150
    assert summary["plantGood"] > 100
    # Only values no PLC has given yet (parameters and results of stations that ran no step) are bad.
    assert set(summary["statuses"]) <= {"Good", "BadWaitingForInitialData"}
    states = [e["newState"] for e in summary["events"]]
    assert states[-1] == 3  # completed
    stations = [e["station"] for e in summary["events"] if e["station"]]
    assert stations[:5] == ["chassis", "coil", "compressor", "charge", "panel"]
    # The order it placed, read afterwards: built on demand, with every step and its results.
    order = summary["order"]
    assert (order["stateStatus"], order["state"]) == ("Good", 3)
    assert order["steps"] == len(placed.steps)
    assert sorted(map(json.dumps, order["results"])) == sorted(json.dumps(s.results) for s in placed.steps)
