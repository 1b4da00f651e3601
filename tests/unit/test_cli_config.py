"""`linebridge run --config FILE`: options from YAML, the command line winning, bad keys named."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bridge.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("restore_logging")


def test_config_file_supplies_options(tmp_path):
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"mapping: {tmp_path / 'from-config.yaml'}\nopcua_endpoint: opc.tcp://127.0.0.1:4841/\n"
    )
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "from-config.yaml: 1 error(s) in mapping" in result.output
    assert "cannot read file" in result.output


def test_the_command_line_wins_over_the_file(tmp_path):
    config = tmp_path / "bridge.yaml"
    config.write_text(f"mapping: {tmp_path / 'from-config.yaml'}\n")
    result = runner.invoke(
        app, ["run", "--config", str(config), "--mapping", str(tmp_path / "from-flag.yaml")]
    )
    assert result.exit_code == 2
    assert "from-flag.yaml" in result.output
    assert "from-config.yaml" not in result.output


def test_unknown_keys_are_named(tmp_path):
    config = tmp_path / "bridge.yaml"
    config.write_text("opcua-endpoint: opc.tcp://127.0.0.1:4841/\nspeed: 3\n")
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "bridge.yaml: speed: unknown option (known: " in result.output
    assert "opcua_endpoint" in result.output


def test_a_running_bridge_does_without_rich_but_its_help_screen_does_not():
    """structlog would import rich for tracebacks the service never draws (docs/telemetry.md)."""
    import subprocess
    import sys

    probe = "import sys, bridge.cli, structlog.dev; print('rich' in sys.modules, structlog.dev.rich is None)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
    shown = runner.invoke(app, ["--help"], env={"COLUMNS": "100"})
    assert shown.exit_code == 0
    assert "╭" in shown.output  # typer still draws its boxed help with rich


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("max_open_orders: 0", "max_open_orders: must be a whole number of at least 1, got 0"),
        ("max_open_orders_per_client: many", "max_open_orders_per_client: must be a whole number"),
        ("journal_reserve_mb: -1", "journal_reserve_mb: must be MiB, 0 or more, got -1"),
        ("journal_reserve_mb: lots", "journal_reserve_mb: must be MiB, 0 or more, got 'lots'"),
        ("journal_retention_days: -2", "journal_retention_days: must be days, 0 (keep all) or more, got -2"),
        ("journal_retention_days: soon", "journal_retention_days: must be days, 0 (keep all) or more"),
        ("max_sessions_per_client: 0", "max_sessions_per_client: must be a whole number of at least 1, got"),
        ("max_connections_per_client: many", "max_connections_per_client: must be a whole number"),
        ("max_queue_size: 2.5", "max_queue_size: must be a whole number of at least 1, got 2.5"),
        ("max_session_timeout: 0", "max_session_timeout: must be seconds, more than 0, got 0"),
    ],
)
def test_limits_from_a_file_are_checked_before_anything_starts(tmp_path, line, named):
    """The command line checks its own values (min=1, min=0); a file's come past it unchecked (a 0
    OPC UA share would refuse every client; a word would fail deep in the server's start)."""
    config = tmp_path / "bridge.yaml"
    config.write_text(f"{line}\ndata_dir: {tmp_path / 'data'}\n")
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (tmp_path / "data").exists()  # no journal made: nothing started


def test_a_journal_retention_shorter_than_the_order_retention_is_refused(tmp_path):
    """The OPC UA face reads a finished order of its retention back from the journal when asked."""
    config = tmp_path / "bridge.yaml"
    config.write_text(f"journal_retention_days: 0.01\norder_retention: 3600\ndata_dir: {tmp_path / 'data'}\n")
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "journal_retention_days: 0.01 days is shorter than --order-retention (3600 s)" in result.output
    assert not (tmp_path / "data").exists()
