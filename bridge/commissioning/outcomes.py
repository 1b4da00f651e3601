"""The cases of `linebridge plc check` and what each can come to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.handshake import StatusBlock

CASES = (
    "reachable",
    "normal_step",
    "result_read_back",
    "repeated_start",
    "lost_acknowledge",
    "rejected_parameters",
    "bridge_restart",
    "heartbeat",
)


NOT_IDLE = "the PLC could not be brought back to idle"


@dataclass(frozen=True)
class CaseResult:
    case: str
    outcome: Literal["passed", "failed", "skipped"]
    detail: str


class CaseFailed(Exception):
    """What the PLC did that the handshake does not allow, in words for the report."""


def describe(status: StatusBlock) -> str:
    return (
        f"state {status.state.name.lower()}, accepted_seq {status.accepted_seq}, done_seq {status.done_seq},"
        f" acked_seq {status.acked_seq}, result_code {status.result_code},"
        f" executed_count {status.executed_count}, reexecuted_count {status.reexecuted_count}"
    )


class CaseSkipped(Exception):
    """The case does not apply to this station type."""
