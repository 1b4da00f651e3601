from __future__ import annotations

from pathlib import Path

import pytest
import structlog
import yaml

from bridge.mapping import LineMapping, load_mapping

ROOT = Path(__file__).resolve().parent.parent
AC_LINE = ROOT / "mappings" / "ac_line.yaml"


@pytest.fixture(scope="session")
def ac_mapping() -> LineMapping:
    return load_mapping(AC_LINE)


@pytest.fixture
def ac_data() -> dict:
    """The AC line mapping as plain data, for tests that break it on purpose."""
    return yaml.safe_load(AC_LINE.read_text())


@pytest.fixture
def restore_logging():
    """For tests that run the CLI in-process: `run` configures structlog onto the test runner's
    stream, which is closed afterwards; later tests must not log into it."""
    yield
    structlog.reset_defaults()
