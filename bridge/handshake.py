"""The start/busy/done handshake between bridge and station PLC, as data (see docs/handshake.md).

Both sides share this layout: the bridge adapter drives it, `plc_sim` implements the PLC side.
A step is identified by a sequence number (1..65535, never 0) that the PLC echoes, so the bridge
can always tell which step a status belongs to, whatever edges were lost or repeated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum

SEQ_MAX = 65535


class Command(IntEnum):
    """Offsets in the command block (holding registers, written by the bridge)."""

    START_SEQ = 0
    ACK_SEQ = 1
    ABORT_SEQ = 2


COMMAND_REGISTERS = len(Command)


class Status(IntEnum):
    """Offsets in the status block (input registers, written by the PLC)."""

    STATE = 0
    ACCEPTED_SEQ = 1
    DONE_SEQ = 2
    RESULT_CODE = 3
    ACKED_SEQ = 4
    EXECUTED_COUNT_HI = 5
    EXECUTED_COUNT_LO = 6
    REEXECUTED_COUNT = 7


STATUS_REGISTERS = len(Status)


class PlcState(IntEnum):
    IDLE = 0
    BUSY = 1
    DONE = 2


class StepPhase(Enum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    FINISHED = "finished"
    ACKNOWLEDGED = "acknowledged"


class ResultCode(IntEnum):
    """Codes the handshake itself defines; stations may add their own from 100 up."""

    OK = 0
    PARAMETERS_REJECTED = 1
    CHECK_FAILED = 2
    ABORTED = 3
    STATION_FAULT = 4
    BRIDGE_LOST = 5  # a start refused because the bridge's heartbeat had stopped (docs/plc-guide.md)
    # Recorded by the bridge, never sent by a PLC:
    PLC_RESTARTED = 65529  # the PLC restarted mid-step and an engineer chose to fault the unit
    STATION_ABSENT = 65530  # every station a unit could go to was away past link.absent_fault_after_s
    RESULTS_INVALID = 65531  # the PLC reported results that are no usable values (NaN, ±Inf, garbage)
    HANDSHAKE_VIOLATION = 65532  # the PLC ran a step the bridge did not start; nothing recorded from it
    READBACK_MISMATCH = 65533  # parameters read back differ; the step was never started
    STEP_TIMEOUT = 65534  # the PLC did not finish within the configured step timeout; aborted


@dataclass(frozen=True)
class StatusBlock:
    state: PlcState
    accepted_seq: int
    done_seq: int
    result_code: int
    acked_seq: int
    executed_count: int
    reexecuted_count: int

    @classmethod
    def from_registers(cls, words: Sequence[int]) -> StatusBlock:
        if len(words) != STATUS_REGISTERS:
            raise ValueError(f"status block is {STATUS_REGISTERS} registers, got {len(words)}")
        try:
            state = PlcState(words[Status.STATE])
        except ValueError:
            raise ValueError(f"PLC reports unknown state {words[Status.STATE]}") from None
        return cls(
            state=state,
            accepted_seq=words[Status.ACCEPTED_SEQ],
            done_seq=words[Status.DONE_SEQ],
            result_code=words[Status.RESULT_CODE],
            acked_seq=words[Status.ACKED_SEQ],
            executed_count=(words[Status.EXECUTED_COUNT_HI] << 16) | words[Status.EXECUTED_COUNT_LO],
            reexecuted_count=words[Status.REEXECUTED_COUNT],
        )

    def to_registers(self) -> list[int]:
        return [
            int(self.state),
            self.accepted_seq,
            self.done_seq,
            self.result_code,
            self.acked_seq,
            (self.executed_count >> 16) & 0xFFFF,
            self.executed_count & 0xFFFF,
            self.reexecuted_count,
        ]

    def phase_of(self, seq: int) -> StepPhase:
        """Where step `seq` stands, judged from the PLC's echo alone."""
        if self.done_seq == seq:
            return StepPhase.ACKNOWLEDGED if self.acked_seq == seq else StepPhase.FINISHED
        if self.accepted_seq == seq:
            return StepPhase.RUNNING
        return StepPhase.NOT_STARTED

    @property
    def ready(self) -> bool:
        """True when the PLC will accept a new start command."""
        return self.state == PlcState.IDLE


def next_beat(value: int, mode: str) -> int:
    """The heartbeat after `value`. counter: 1, 2, ... 65535, 1 (never 0, which a PLC may read as
    "never written"); toggle: 1, 0, 1, ..."""
    if mode == "toggle":
        return 0 if value else 1
    return 1 if value >= 65535 else value + 1


def next_seq(seq: int) -> int:
    """The sequence number after `seq`, wrapping past 65535 to 1 (0 means 'none')."""
    return 1 if seq >= SEQ_MAX else seq + 1


@dataclass
class HandshakeWatch:
    """What one PLC's status block may do between the bridge's own commands; any other change
    means another master drove the handshake (docs/handshake.md, "Another master").

    The first status seen is taken as it is (a bridge restarting, or on a fresh journal, takes
    over a PLC in any state); from then on every start must be one the bridge wrote, every result
    one of its steps, and the re-execution count must not rise. A PLC restart (its counts since
    power-up fall) is taken as a new first status.
    """

    executed: int | None = None
    reexecuted: int = 0
    done_seq: int = 0
    pending: set[int] = field(default_factory=set)  # starts written, not yet seen taken
    ours: deque[int] = field(default_factory=lambda: deque(maxlen=4))  # the last steps the bridge started
    fell_back: str | None = None  # how the PLC's counts fell (it restarted), until the caller takes it

    def reset(self) -> None:
        self.executed = None

    def started(self, seq: int) -> None:
        """Call before writing `start_seq = seq`."""
        self.pending.add(seq)
        if seq not in self.ours:
            self.ours.append(seq)

    def check(self, status: StatusBlock) -> str | None:
        """Why `status` shows work the bridge did not order, or None. A restart seen (its counts
        fell) is left in `fell_back` for the caller, who knows whether a step was under way."""
        if self.executed is not None and status.executed_count < self.executed:
            self.fell_back = f"executed count fell from {self.executed} to {status.executed_count}"
        if self.executed is None or status.executed_count < self.executed:
            self.executed, self.reexecuted = status.executed_count, status.reexecuted_count
            self.done_seq = status.done_seq
            if status.accepted_seq not in self.ours:  # a step under way at take-over may finish
                self.ours.append(status.accepted_seq)
            return None
        if status.reexecuted_count > self.reexecuted:
            return f"re-execution count rose from {self.reexecuted} to {status.reexecuted_count}"
        rise = status.executed_count - self.executed
        if rise > 1 or (rise == 1 and status.accepted_seq not in self.pending):
            return (
                f"{rise} step(s) started that the bridge did not start (executed count"
                f" {self.executed} → {status.executed_count}, accepted_seq {status.accepted_seq})"
            )
        if status.done_seq != self.done_seq and status.done_seq not in self.ours:
            return f"a result for step {status.done_seq}, which the bridge did not start"
        if rise == 1:
            self.pending.discard(status.accepted_seq)
        self.executed, self.done_seq = status.executed_count, status.done_seq
        return None


def station_state(online: bool, held: bool, status: StatusBlock | None) -> str:
    """What a station shows (OPC UA `State`, the line view): offline while its PLC does not answer,
    error while it is held (a handshake it cannot trust), else its PLC's handshake state."""
    if not online:
        return "offline"
    if held:
        return "error"
    if status is None or status.state == PlcState.IDLE:
        return "idle"
    return "busy" if status.state == PlcState.BUSY else "done"
