"""`linebridge run` as a process, driven from the shell: health, order submit/watch/show/cancel."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from plc_sim.line import SimulatedLine
from tests.conftest import AC_LINE
from tests.integration.shell import cli

pytestmark = pytest.mark.slow


def logged(log: Path) -> list[dict]:
    """The bridge's log: JSON lines, as its output is not a terminal (whole lines only: the last
    one may still be being written)."""
    return [json.loads(line) for line in log.read_text().splitlines(keepends=True) if line.endswith("}\n")]


async def run_bridge(log: Path, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """`linebridge run ARGS` (OPC UA on port 0 unless ARGS say otherwise: the server binds a free
    port itself); returns the process and the endpoint it logged."""
    if "--opcua-endpoint" not in args:
        args = (*args, "--opcua-endpoint", "opc.tcp://127.0.0.1:0/")
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", *args, stdout=out, stderr=out
        )
    async with asyncio.timeout(30):
        while not (found := [e["endpoint"] for e in logged(log) if e.get("event") == "opcua_listening"]):
            assert process.returncode is None, logged(log)
            await asyncio.sleep(0.1)
    return process, found[0]


def reloads(log: Path) -> list[list[str]]:
    """What each mapping reload the bridge logged (JSON lines: its output is not a terminal) changed."""
    return [e["changed"] for e in logged(log) if e.get("event") == "mapping_reloaded"]


async def test_shell_client_against_a_running_and_a_stopped_bridge(ac_mapping, tmp_path: Path):
    mapping = tmp_path / "line.yaml"  # a copy the test edits, as an engineer would
    mapping.write_text(AC_LINE.read_text())
    async with SimulatedLine(ac_mapping, ports=dict.fromkeys(ac_mapping.stations, 0), speed=0) as line:
        deployment = tmp_path / "deployment.yaml"
        line.write_deployment(deployment)
        bridge_log = tmp_path / "bridge.log"
        bridge, endpoint = await run_bridge(
            bridge_log, "--mapping", str(mapping), "--deployment", str(deployment),
            "--data-dir", str(tmp_path / "data"), "--telemetry-interval", "0.2",
        )  # fmt: skip
        try:
            async with asyncio.timeout(30):
                while (result := await cli("health", "--endpoint", endpoint, "--timeout", "2"))[0] != 0:
                    assert bridge.returncode is None, bridge_log.read_text()
                    await asyncio.sleep(0.2)
            assert result[1].strip() == f"ok {endpoint} line ac_line"
            async with asyncio.timeout(10):  # start-up's address space leaves the collector's sight
                while not (settled := [e for e in logged(bridge_log) if e["event"] == "heap_settled"]):
                    assert bridge.returncode is None, bridge_log.read_text()
                    await asyncio.sleep(0.1)
            assert settled[0]["frozen_objects"] > 500_000

            code, out, err = await cli(
                "order",
                "submit",
                "SH-1",
                "-p",
                "AC-W",
                "-o",
                "capacity_btu=24000",
                "-o",
                "engraving=Hello World",
                "--quantity",
                "2",
                "-e",
                endpoint,
            )
            assert code == 0, err
            assert out.startswith("accepted SH-1: ")
            code, out, err = await cli("order", "watch", "SH-1", "--timeout", "30", "-e", endpoint)
            assert code == 0, err
            # what happened before the watch began (a watch after the submit misses no station),
            # then the state it has now, then its changes
            lines = out.strip().splitlines()
            now = next(i for i, text in enumerate(lines) if text.endswith("(now)"))
            assert all(text.endswith("(earlier)") for text in lines[:now])
            assert "SH-1  received (earlier)" in lines[0]
            assert "SH-1  unit 0 at chassis: step " in lines[1]
            assert "SH-1  completed" in lines[-1]
            code, out, err = await cli("order", "show", "SH-1", "-e", endpoint)
            assert code == 0, err
            assert out.startswith("SH-1  AC-W  completed  2/2 units")
            assert out.count("  unit ") == 14
            (charged, *_) = [text for text in out.splitlines() if " charge " in text]
            assert re.search(r"actual_charge_g 1\d{3}\.\d g$", charged), charged  # unit, precision 1
            await line["chassis"].set_fault("stall", 1)  # SH-3 stays at the first station
            code, out, err = await cli("order", "submit", "SH-3", "-p", "AC-W", "-e", endpoint)
            assert code == 0, err
            async with asyncio.timeout(10):
                while "chassis" not in (await cli("order", "list", "--state", "running", "-e", endpoint))[1]:  # noqa: ASYNC110 - polls the bridge, bounded
                    await asyncio.sleep(0.1)
            code, out, err = await cli("order", "list", "-e", endpoint)
            assert code == 0, err
            rows = out.strip().splitlines()
            assert rows[0].split() == ["order", "product", "state", "units", "where"]
            assert rows[1].split() == ["SH-1", "AC-W", "completed", "2/2"]  # oldest first
            assert rows[2].split() == ["SH-3", "AC-W", "running", "0/1", "chassis"]
            assert err.strip() == "2 order(s)"
            code, out, err = await cli("order", "list", "--state", "completed", "-e", endpoint)
            assert [row.split()[0] for row in out.strip().splitlines()[1:]] == ["SH-1"]
            code, out, err = await cli("order", "show", "SH-3", "-e", endpoint)  # a step still open
            assert code == 0, err  # (its FinishedAt is MinDateTime: a null failed the whole Read)
            assert out.startswith("SH-3  AC-W  running  0/1 units")
            await line["chassis"].set_fault("stall", 0)
            watch = ("order", "watch", "SH-3", "--progress", "--timeout", "30", "-e", endpoint)
            code, out, err = await cli(*watch)
            assert code == 0, err
            blocks = out.split("SH-3  ")[1:]  # not a terminal: the whole block again on each move
            assert blocks[-1].splitlines()[0] == "completed  1/1 units"
            last = blocks[-1].splitlines()[1].split()
            assert last[:4] == ["unit", "0:", "chassis", "✓"]
            assert last.count("✓") == 7
            assert "\x1b[" not in out  # no cursor movement into a file or pipe
            # -q prints nothing when accepted; a faulted order's watch says where and why
            code, out, err = await cli("order", "submit", "SH-Q", "-p", "AC-W", "-q", "-e", endpoint)
            assert (code, out) == (0, ""), err
            await line["coil"].set_fault("reject_next", 107)
            code, out, err = await cli("order", "submit", "SH-F", "-p", "AC-W", "-q", "-e", endpoint)
            assert code == 0, err
            code, out, err = await cli("order", "watch", "SH-F", "--timeout", "30", "-e", endpoint)
            assert "SH-F  faulted at coil (result code 107)" in out, out

            code, out, err = await cli(
                "order", "submit", "SH-2", "-p", "AC-W", "-o", "capacity_btu=10000", "-e", endpoint
            )
            assert code == 1
            assert "BadInvalidArgument" in err
            assert "options.capacity_btu: must be one of 9000, 12000, 18000, 24000" in err
            code, out, err = await cli("order", "cancel", "NOPE", "-e", endpoint)
            assert (code, "BadNotFound" in err) == (1, True)
            code, out, err = await cli("order", "cancel", "SH-1", "-e", endpoint)  # completed already
            assert (code, out) == (1, ""), out
            assert "BadInvalidState" in err
            assert "already completed" in err

            mapping.write_text(
                AC_LINE.read_text().replace("tolerance_g: {constant: 10}", "tolerance_g: {constant: 12}")
            )
            code, out, err = await cli("mapping", "reload", "-e", endpoint)
            assert (code, out.strip()) == (
                0,
                "reloaded: products.AC-W.parameters.charging.tolerance_g.constant",
            ), err
            mapping.write_text(mapping.read_text().replace("cycle_time_s: 25", "cycle_time_s: 26"))
            code, out, err = await cli("mapping", "reload", "-e", endpoint)
            assert code == 1
            assert (
                "ReloadMapping refused (BadInvalidState): station_types.charging.cycle_time_s: differs" in err
            )
            mapping.write_text(
                AC_LINE.read_text().replace("tolerance_g: {constant: 10}", "tolerance_g: {constant: 11}")
            )
            bridge.send_signal(signal.SIGHUP)  # what `systemctl reload` sends
            async with asyncio.timeout(10):
                while len(reloads(tmp_path / "bridge.log")) < 2:  # noqa: ASYNC110 - polls the log, bounded
                    await asyncio.sleep(0.05)
            assert (
                reloads(tmp_path / "bridge.log")
                == [["products.AC-W.parameters.charging.tolerance_g.constant"]] * 2
            )
        finally:
            if bridge.returncode is None:
                bridge.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await bridge.wait()
        assert bridge.returncode == 0, (tmp_path / "bridge.log").read_text()
        code, _, err = await cli("health", "--endpoint", endpoint, "--timeout", "2")
        assert code == 1
        assert "Connect call failed" in err or "refused" in err.lower()


async def test_container_command_line_serves_secured_and_answers_health(ac_mapping, tmp_path: Path):
    """The Dockerfile's entrypoint: all interfaces, --security; its health check needs no session."""
    async with SimulatedLine(ac_mapping, ports=dict.fromkeys(ac_mapping.stations, 0), speed=0) as line:
        line.write_deployment(tmp_path / "deployment.yaml")
        code, _, err = await cli(
            "run", "--mapping", str(AC_LINE), "--deployment", str(tmp_path / "deployment.yaml"),
            "--data-dir", str(tmp_path / "open"), "--opcua-endpoint", "opc.tcp://0.0.0.0:0/", "--no-security",
        )  # fmt: skip
        assert code == 2
        assert "needs --allow-insecure-remote" in err
        bridge, listening = await run_bridge(
            tmp_path / "bridge.log", "--mapping", str(AC_LINE), "--deployment",
            str(tmp_path / "deployment.yaml"), "--data-dir", str(tmp_path / "data"),
            "--opcua-endpoint", "opc.tcp://0.0.0.0:0/", "--security",
        )  # fmt: skip
        try:
            endpoint = listening.replace("0.0.0.0", "127.0.0.1")
            async with asyncio.timeout(30):
                while (result := await cli("health", "--endpoint", endpoint, "--timeout", "2"))[0] != 0:
                    assert bridge.returncode is None, (tmp_path / "bridge.log").read_text()
                    await asyncio.sleep(0.2)
            assert result[1].strip() == f"ok {endpoint} line ac_line"
            code, _, err = await cli("order", "show", "X", "-e", endpoint)  # a session needs a user
            assert code == 1
            assert "accepts secured connections only: set LINEBRIDGE_CERTIFICATE" in err, err
            pki = str(tmp_path / "data" / "pki")
            code, out, err = await cli("pki", "client-certificate", "shell", "--pki-dir", pki)
            assert code == 0, err
            exports = dict(pair.split("=") for pair in out.splitlines()[1].split()[1:])
            code, _, err = await cli("user", "add", "olga", "--role", "operator", "--password", "pw",
                                     "--users", str(tmp_path / "data" / "users.yaml"))  # fmt: skip
            assert code == 0, err
            wrong = {**exports, "LINEBRIDGE_USER": "olga", "LINEBRIDGE_PASSWORD": "guess"}
            code, _, err = await cli("order", "show", "X", "-e", endpoint, env=wrong)
            assert code == 1
            assert "refused the login of user 'olga': wrong user name or password" in err, err
            shell = {**exports, "LINEBRIDGE_USER": "olga", "LINEBRIDGE_PASSWORD": "pw"}
            code, out, err = await cli("order", "submit", "SEC-SH", "-p", "AC-W", "-e", endpoint, env=shell)
            assert code == 0, err
            assert out.startswith("accepted SEC-SH")
            code, _, err = await cli("mapping", "reload", "-e", endpoint, env=shell)
            assert (code, "BadUserAccessDenied" in err) == (1, True), err  # an operator may not
        finally:
            bridge.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await bridge.wait()
        assert bridge.returncode == 0, (tmp_path / "bridge.log").read_text()


async def test_a_busy_opcua_port_is_one_line_naming_it(ac_mapping, tmp_path: Path):
    async with SimulatedLine(ac_mapping, ports=dict.fromkeys(ac_mapping.stations, 0), speed=0) as line:
        line.write_deployment(tmp_path / "deployment.yaml")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            code, _, err = await cli(
                "run", "--mapping", str(AC_LINE), "--deployment", str(tmp_path / "deployment.yaml"),
                "--data-dir", str(tmp_path / "data"), "--opcua-endpoint", f"opc.tcp://127.0.0.1:{port}/",
                "--log-level", "warning",
            )  # fmt: skip
    assert code == 2
    lines = [line for line in err.splitlines() if not line.startswith("WARNING")]
    assert lines == [
        f"OPC UA endpoint opc.tcp://127.0.0.1:{port}/: cannot listen (error while attempting to bind on"
        f" address ('127.0.0.1', {port}): address already in use)"
    ], err


def completed_orders(journal: Path) -> int:
    import sqlite3

    if not journal.exists():
        return 0
    with sqlite3.connect(journal) as db:
        try:
            return db.execute("SELECT count(*) FROM orders WHERE state = 'completed'").fetchone()[0]
        except sqlite3.OperationalError:  # the bridge has made the file but not its tables yet
            return 0


@pytest.mark.parametrize(
    ("opcua", "sig"), [(False, signal.SIGTERM), (True, signal.SIGTERM), (True, signal.SIGINT)]
)
async def test_hundreds_of_orders_then_a_prompt_stop(ac_mapping, tmp_path: Path, opcua, sig):
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps([{"order_id": f"o{i}", "product": "AC-W"} for i in range(150)]))
    async with SimulatedLine(ac_mapping, ports=dict.fromkeys(ac_mapping.stations, 0), speed=0) as line:
        line.write_deployment(tmp_path / "deployment.yaml")
        common = [
            "--mapping",
            str(AC_LINE),
            "--deployment",
            str(tmp_path / "deployment.yaml"),
            "--submit",
            str(orders),
        ]
        if not opcua:  # --exit-when-idle ends the run once every order is done
            code, _, err = await cli(
                "run", *common, "--data-dir", str(tmp_path / "idle"), "--no-opcua", "--exit-when-idle"
            )
            assert code == 0, err[-3000:]
            assert completed_orders(tmp_path / "idle" / "journal.sqlite") == 150
        log = tmp_path / "bridge.log"
        data = tmp_path / "data"
        if opcua:
            bridge, _ = await run_bridge(log, *common, "--data-dir", str(data), "--telemetry-interval", "0.1")
        else:
            with log.open("wb") as out:
                bridge = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bridge", "run", *common, "--data-dir", str(data), "--no-opcua",
                    stdout=out, stderr=out,
                )  # fmt: skip
        try:
            async with asyncio.timeout(60):
                while completed_orders(data / "journal.sqlite") < 150:
                    assert bridge.returncode is None, log.read_text()[-3000:]
                    await asyncio.sleep(0.1)
            sent = time.monotonic()
            bridge.send_signal(sig)
            async with asyncio.timeout(10):
                await bridge.wait()
            took = time.monotonic() - sent
        finally:
            if bridge.returncode is None:
                bridge.kill()
        assert bridge.returncode == 0, log.read_text()[-3000:]
        assert took < 5, (
            f"stopping took {took:.2f} s"
        )  # about 0.1 s here; 5 s of slack for a loaded CI machine
        assert any(e.get("event") == "bridge_stopped" for e in logged(log))


async def test_a_busy_simulator_port_is_one_line_naming_it(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from plc_sim.cli import main; main()", "--mapping", str(AC_LINE),
            "--base-port", str(port), "--log-level", "warning",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(60):
            _, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith("station ")
    assert "cannot listen on 127.0.0.1:" in lines[0]  # the taken port's station, or a neighbour's
