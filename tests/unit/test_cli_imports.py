"""The client commands (order, station, alarm, plc sheet, user, ...) start in a fraction of a
second less when `linebridge` does not import the server stack that only `run` uses."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_STACK = ("bridge.service", "bridge.opcua.face", "bridge.modbus", "bridge.http", "pymodbus", "uvicorn")


def test_the_command_line_imports_no_server_stack_until_run() -> None:
    probe = (
        "import json, sys, bridge.cli; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({SERVER_STACK!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []

