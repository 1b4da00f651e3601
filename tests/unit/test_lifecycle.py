"""Start-up's heap: no cyclic collection while it builds, collecting again once it is settled or
once a start that failed has left."""

from __future__ import annotations

import gc

import pytest

from bridge.lifecycle import collections_paused, settle_heap


@pytest.fixture
def heap_restored():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


def test_collections_pause_while_starting_and_resume_once_the_heap_is_settled(heap_restored):
    assert gc.isenabled()
    with collections_paused():
        assert not gc.isenabled()
        assert settle_heap() > 0
        assert gc.isenabled()  # serving from here on
    assert gc.isenabled()


def test_a_start_that_fails_before_settling_leaves_collections_running(heap_restored):
    with pytest.raises(OSError, match="port taken"), collections_paused():
        raise OSError("port taken")
    assert gc.isenabled()
