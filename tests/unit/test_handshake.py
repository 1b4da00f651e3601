"""The handshake's pure part: how a status block tells where a step stands."""

from __future__ import annotations

import pytest

from bridge.handshake import HandshakeWatch, PlcState, StatusBlock, StepPhase, next_seq


def status(state=PlcState.IDLE, accepted=0, done=0, code=0, acked=0) -> StatusBlock:
    return StatusBlock(state, accepted, done, code, acked, executed_count=70000, reexecuted_count=0)


@pytest.mark.parametrize(
    ("block", "phase"),
    [
        (status(accepted=4, done=4, acked=4), StepPhase.NOT_STARTED),
        (status(PlcState.BUSY, accepted=5, done=4, acked=4), StepPhase.RUNNING),
        (status(PlcState.DONE, accepted=5, done=5, code=2, acked=4), StepPhase.FINISHED),
        (status(accepted=5, done=5, acked=5), StepPhase.ACKNOWLEDGED),
    ],
)
def test_phase_of_step_5(block, phase):
    assert block.phase_of(5) is phase


def test_status_block_round_trips_through_registers():
    block = status(PlcState.DONE, accepted=9, done=9, code=3, acked=8)
    words = block.to_registers()
    assert words[5:7] == [1, 4464]  # 70000 as two words, high first
    assert StatusBlock.from_registers(words) == block


def test_garbage_status_is_refused():
    with pytest.raises(ValueError, match="unknown state 7"):
        StatusBlock.from_registers([7, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="8 registers"):
        StatusBlock.from_registers([0, 0])


def test_sequence_numbers_skip_zero_when_they_wrap():
    assert next_seq(1) == 2
    assert next_seq(65535) == 1


def seen(accepted, done, executed, reexecuted=0, state=PlcState.IDLE) -> StatusBlock:
    return StatusBlock(state, accepted, done, 0, done, executed, reexecuted)


def test_the_watch_takes_the_first_status_as_it_is_and_then_only_the_bridges_own_starts():
    watch = HandshakeWatch()
    assert watch.check(seen(9, 8, 100, reexecuted=2, state=PlcState.BUSY)) is None  # take-over
    assert watch.check(seen(9, 9, 100, reexecuted=2, state=PlcState.DONE)) is None  # that step ends
    watch.started(10)
    assert watch.check(seen(10, 9, 101, reexecuted=2, state=PlcState.BUSY)) is None
    assert watch.check(seen(10, 10, 101, reexecuted=2)) is None
    watch.started(11)
    watch.started(11)  # a start written again after a lost reply is still one start
    assert watch.check(seen(11, 11, 102, reexecuted=2)) is None


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        (seen(11, 11, 101), "1 step(s) started that the bridge did not start"),
        (seen(12, 12, 102), "2 step(s) started that the bridge did not start"),
        (seen(9, 9, 101, reexecuted=1), "re-execution count rose from 0 to 1"),
        (seen(10, 7, 100), "a result for step 7, which the bridge did not start"),
    ],
)
def test_the_watch_names_what_another_master_did(after, reason):
    watch = HandshakeWatch()
    watch.check(seen(10, 10, 100))
    assert reason in (watch.check(after) or "")


def test_a_plc_restart_is_a_new_first_status():
    watch = HandshakeWatch()
    watch.check(seen(10, 10, 100))
    assert watch.check(seen(0, 0, 0)) is None  # counts since power-up fell
    assert watch.check(seen(0, 0, 0)) is None
    watch.reset()  # what clearing a held station does
    assert watch.check(seen(40, 40, 7)) is None
