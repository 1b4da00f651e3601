"""`make run`, as a newcomer starts it: closing the terminal, Ctrl-C or `kill` stops the simulator
and the bridge alike (no bridge left orphaned on its port)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def session_members(sid: int) -> list[int]:
    """Processes of session `sid` still alive (zombies count as gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
async def test_make_run_stops_both_processes(tmp_path, sig):
    process = await asyncio.create_subprocess_exec(
        "make", "-s", "-C", str(ROOT), "run", f"DATA_DIR={tmp_path}", "ENDPOINT=opc.tcp://127.0.0.1:0/",
        "SIM_FLAGS=--ephemeral", "HTTP=127.0.0.1:0", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job has
    )  # fmt: skip
    assert process.stdout is not None
    seen = []
    try:
        async with asyncio.timeout(90):
            events = ("opcua_listening", "http_listening")
            while not all(any(event in line for line in seen) for event in events):
                line = (await process.stdout.readline()).decode()
                assert line, "".join(seen)
                seen.append(line)
        assert len(session_members(process.pid)) >= 3  # make's shell, the simulator, the bridge
        assert any("Line view: http://" in line and "Prometheus metrics: http://" in line for line in seen)
        (listening,) = [line for line in seen if "http_listening" in line]
        metrics = re.search(r"http://[\d.]+:\d+/metrics", listening)
        assert metrics is not None, listening
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics.group(), timeout=5).read())
        assert b"linebridge_station_connected" in body
        os.killpg(process.pid, sig)  # what the terminal does to its foreground job
        async with asyncio.timeout(20):
            await process.communicate()
            while session_members(process.pid):  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.05)
    finally:
        if session_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
