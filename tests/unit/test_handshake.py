"""The handshake's pure part: how a status block tells where a step stands."""

from __future__ import annotations

import pytest

from bridge.handshake import PlcState, StatusBlock, StepPhase, next_seq


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
