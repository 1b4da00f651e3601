from __future__ import annotations

import gc
from pathlib import Path

import pytest
import structlog
import yaml

from bridge.mapping import LineMapping, load_mapping

ROOT = Path(__file__).resolve().parent.parent
AC_LINE = ROOT / "mappings" / "ac_line.yaml"


def pytest_configure(config: pytest.Config) -> None:
    """Collect cyclic garbage in larger batches in the test process. One process runs hundreds of
    tests, and each OPC UA rig builds some 10^5 long-lived objects: at Python's default thresholds a
    rig's start-up ran 400-900 collections, up to 1.4 s of it full ones walking every earlier
    test's heap too (`linebridge run` settles its heap once started, bridge.lifecycle.settle_heap;
    a test process never is). Reference counting frees as before; cycles wait a little longer."""
    gc.set_threshold(20_000, 20, 20)


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
