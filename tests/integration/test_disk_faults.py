"""A broken machine under the journal: a full disk (a real, small tmpfs), a damaged journal file and a
data directory the bridge may not write. Admission stops with a reason that says so, running steps
wait where they are, and the line resumes by itself when space returns; new orders are refused
before the disk is full, so those under way finish; a journal the bridge cannot use stops it with
one message naming the file and the remedy."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from asyncua import ua

from bridge.domain.model import OrderState
from bridge.errors import ConfigurationError
from bridge.journal.check import check_journal
from bridge.journal.sqlite import SqliteJournal
from tests.integration.opcua_rig import opcua_rig, s
from tests.integration.orders import until

pytestmark = pytest.mark.slow
LINEBRIDGE = str(Path(sys.executable).parent / "linebridge")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    done = subprocess.run(mount, capture_output=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write `path` until the file system has no byte left."""
    with path.open("wb", buffering=0) as out:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return path


async def test_a_full_disk_stops_admission_and_the_line_resumes_by_itself(ac_mapping, tmp_path):
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        async with opcua_rig(ac_mapping, disk / "data") as rig:
            engine, chassis = rig.bridge.engine, rig.line["chassis"]
            await chassis.set_fault("stall", 1)
            await rig.bridge.submit("FULL-1", "AC-W", {})
            await until(lambda: rig.bridge.get("FULL-1").state == OrderState.RUNNING)
            filler = await asyncio.to_thread(fill, disk / "filler")
            await chassis.set_fault("stall", 0)  # the step ends at the PLC: its result cannot be journaled
            await until(lambda: engine.journal_fault is not None)
            assert "full" in engine.journal_fault
            # the operator is told at its next poll: a held alarm per station (the whole line stands),
            # its history row kept until it can be written; each follows that station's own poll
            held = [f"{name}.held" for name in ac_mapping.stations]
            await until(lambda: all(rig.bridge.alarms.get(alarm).active for alarm in held))

            refused = await rig.call("SubmitOrder", s("LATE-1"), s("AC-W"), s("{}"))
            assert refused.StatusCode.value == ua.StatusCodes.BadResourceUnavailable
            assert "full" in refused.InputArgumentDiagnosticInfos[0].AdditionalInfo
            waiting = rig.node("Plant.Lines.ac_line.Orders.FULL-1.WaitingFor")
            async with asyncio.timeout(10):
                while "journal cannot be written" not in await waiting.read_value():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            state = rig.node("Plant.Lines.ac_line.Stations.chassis.State")
            async with asyncio.timeout(10):
                while await state.read_value() != 4:  # noqa: ASYNC110 - error: the line stands
                    await asyncio.sleep(0.1)
            assert rig.bridge.get("FULL-1").state == OrderState.RUNNING
            await asyncio.sleep(0)

            filler.unlink()  # space returns: nothing to restart
            await until(lambda: engine.journal_fault is None)
            await until(lambda: not rig.bridge.alarms.get("pack.held").active)
            await until(lambda: rig.bridge.get("FULL-1").state == OrderState.COMPLETED)
            after = await rig.call("SubmitOrder", s("AFTER-1"), s("AC-W"), s("{}"))
            assert after.StatusCode.is_good()
            await until(lambda: rig.bridge.get("AFTER-1").state == OrderState.COMPLETED)
            assert rig.bridge.get("LATE-1") is None  # refused, so not kept anywhere
            assert chassis.executed[1] == 1  # FULL-1's step ran once at the PLC
            steps = rig.bridge.get("FULL-1").steps
            assert len(steps) == len({(s.unit_index, s.route_index) for s in steps}) == 7
            rows = rig.bridge.journal.load_alarms("pack.held")
            assert [(r["what"], r["active"]) for r in rows[-2:]] == [("activated", 1), ("cleared", 0)]


async def test_new_orders_are_refused_before_the_disk_fills_and_those_under_way_finish(ac_mapping, tmp_path):
    with small_tmpfs(tmp_path / "disk", "48m") as disk:
        async with opcua_rig(ac_mapping, disk / "data", journal_reserve_mb=4) as rig:
            bridge, chassis = rig.bridge, rig.line["chassis"]
            await chassis.set_fault("stall", 1)
            await bridge.submit("RUN-1", "AC-W", {})
            await until(lambda: bridge.get("RUN-1").state == OrderState.RUNNING)
            # whatever fills the disk: 3 MiB left (the telemetry history keeps growing), under the 4 kept
            filler = disk / "filler"
            await asyncio.to_thread(filler.write_bytes, b"\0" * (shutil.disk_usage(disk).free - (3 << 20)))

            said = bridge.refusing()  # what a face shows before anyone submits
            refused = await rig.call("SubmitOrder", s("LATE-1"), s("AC-W"), s("{}"))
            assert refused.StatusCode.value == ua.StatusCodes.BadResourceUnavailable
            reason = refused.InputArgumentDiagnosticInfos[0].AdditionalInfo
            assert said is not None
            kept = " MiB free, under the 4.0 MiB kept for the orders under way (--journal-reserve-mb)"
            for told in (reason, said):
                assert told.startswith(f"the journal's disk ({disk / 'data'}) is nearly full: ")
                assert told.endswith(kept)
                assert float(told.split("nearly full: ")[1].split(" MiB")[0]) < 4.0
            await chassis.set_fault("stall", 0)  # the order under way journals its steps in the space kept
            await until(lambda: bridge.get("RUN-1").state == OrderState.COMPLETED)
            assert bridge.engine.journal_fault is None
            assert bridge.get("LATE-1") is None  # refused, so not kept anywhere

            filler.unlink()
            assert bridge.refusing() is None
            after = await rig.call("SubmitOrder", s("AFTER-1"), s("AC-W"), s("{}"))
            assert after.StatusCode.is_good()
            await until(lambda: bridge.get("AFTER-1").state == OrderState.COMPLETED)


def run_bridge(data_dir: Path) -> subprocess.CompletedProcess[str]:
    mapping = Path(__file__).resolve().parents[2] / "mappings" / "ac_line.yaml"
    command = [LINEBRIDGE, "run", "--mapping", str(mapping), "--data-dir", str(data_dir), "--no-opcua",
               "--telemetry-interval", "0", "--exit-when-idle"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_a_sound_journal_on_a_full_disk_is_told_to_free_space_not_to_be_moved_aside(tmp_path):
    """SQLite opening it says "disk I/O error"; the damaged-file remedy would send it aside."""
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        journal = disk / "data" / "journal.sqlite"
        SqliteJournal(journal).close()
        fill(disk / "filler")
        with pytest.raises(ConfigurationError) as refused:
            SqliteJournal(journal)
        message = str(refused.value)
        assert f"the disk holding {journal.parent} is full: free space there, then start again" in message
        assert "move it aside" not in message
        (disk / "filler").unlink()
        SqliteJournal(journal).close()  # space back: the same journal opens


def test_a_damaged_journal_stops_the_bridge_with_one_message_and_is_not_touched(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    journal = data / "journal.sqlite"
    SqliteJournal(journal).close()
    raw = bytearray(journal.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)  # the first page's header and schema, scrambled
    journal.write_bytes(bytes(raw))
    before = journal.read_bytes()

    problems, _ = check_journal(journal)
    assert problems
    done = run_bridge(data)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # one message, no traceback
    assert str(journal) in lines[0]
    assert "move it aside" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert journal.read_bytes() == before

    check = subprocess.run([LINEBRIDGE, "journal", "check", str(journal)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode == 1
    assert "NOT sound" in check.stderr


def test_an_unwritable_data_directory_is_named_with_the_remedy(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    journal = data / "journal.sqlite"
    SqliteJournal(journal).close()
    sound = subprocess.run([LINEBRIDGE, "journal", "check", str(journal)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert sound.returncode == 0, sound.stderr
    assert "sound; 0 orders" in sound.stdout
    journal.unlink()
    if os.geteuid() == 0:  # root writes anywhere: a read-only bind mount refuses even root
        ro = subprocess.run(["mount", "--bind", "-o", "ro", str(data), str(data)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip("cannot make a read-only mount here")
        subprocess.run(["mount", "-o", "remount,bind,ro", str(data)], check=False)
    else:
        data.chmod(0o500)
    try:
        with pytest.raises(ConfigurationError, match="may not write") as refused:
            SqliteJournal(journal)
        assert str(journal) in str(refused.value)
        done = run_bridge(data)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert "may not write" in done.stderr
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(data)], check=False)
        else:
            data.chmod(0o700)
