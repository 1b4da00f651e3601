"""`plc-sim` as a process, and an independent Modbus client (mbpoll) running a step against it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import AC_LINE

pytestmark = pytest.mark.interop


@pytest.fixture
def mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        message = "mbpoll is not installed (apt-get install mbpoll; `make test` installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must not skip the interoperability test")
        pytest.skip(message)
    return path


@pytest.fixture
def simulated_line(tmp_path: Path):
    """plc-sim serving the AC line on free ports; yields (process, endpoints by station)."""
    deployment = tmp_path / "deployment.yaml"
    process = subprocess.Popen(
        [sys.executable, "-m", "plc_sim", "--mapping", str(AC_LINE), "--speed", "0", "--ephemeral",
         "--write-deployment", str(deployment), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not deployment.exists() or not deployment.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"plc-sim did not come up: {process.communicate(timeout=5)}")
            time.sleep(0.05)
        yield process, yaml.safe_load(deployment.read_text())["stations"]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        for pipe in (process.stdout, process.stderr):
            pipe.close()


def poll(mbpoll: str, port: int, *args: str) -> list[float]:
    """Run mbpoll once (PDU addressing, -0) and return the values it printed."""
    result = subprocess.run(
        [mbpoll, "-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1", "-o", "2", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return [float(v) for v in re.findall(r"^\[\d+\]:\s+(\S+)", result.stdout, re.MULTILINE)]


def test_plc_sim_serves_all_stations_and_prints_them(simulated_line):
    process, endpoints = simulated_line
    assert list(endpoints) == ["chassis", "coil", "compressor", "charge", "panel", "test_a", "test_b", "pack"]
    assert all(ep["host"] == "127.0.0.1" and ep["port"] > 0 for ep in endpoints.values())
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    for name, ep in endpoints.items():
        assert re.search(rf"^{name}\s+\w+\s+127\.0\.0\.1:{ep['port']}\s", out, re.MULTILINE), out


def test_mbpoll_runs_a_charging_step(simulated_line, mbpoll):
    _, endpoints = simulated_line
    port = endpoints["charge"]["port"]
    host = "127.0.0.1"
    assert poll(mbpoll, port, "-t", "3", "-r", "0", "-c", "8", host)[:5] == [0, 0, 0, 0, 0]
    poll(mbpoll, port, "-t", "4", "-r", "100", host, "980", "10")  # charge_g, tolerance_g
    assert poll(mbpoll, port, "-t", "4", "-r", "100", "-c", "2", host) == [980, 10]
    poll(mbpoll, port, "-t", "4", "-r", "0", host, "1")  # start step 1
    deadline = time.monotonic() + 10
    while (status := poll(mbpoll, port, "-t", "3", "-r", "0", "-c", "5", host))[2] != 1:
        assert time.monotonic() < deadline, f"step 1 never finished: {status}"
    assert status[0] == 2  # done
    assert status[3] == 0  # result code ok
    (charge,) = poll(mbpoll, port, "-t", "3:float", "-B", "-r", "100", host)
    assert abs(charge - 980) <= 10
    poll(mbpoll, port, "-t", "4", "-r", "1", host, "1")  # acknowledge step 1
    deadline = time.monotonic() + 10
    while (status := poll(mbpoll, port, "-t", "3", "-r", "0", "-c", "8", host))[0] != 0:
        assert time.monotonic() < deadline, f"acknowledge not taken: {status}"
    assert status[4] == 1  # acked_seq
    assert status[6] == 1  # executed_count (low word)
