"""Exceptions of linebridge, one root so callers can catch everything we raise on purpose.

BridgeError
├── ConfigurationError      a configuration or deployment file that cannot be used
│   └── MappingError        a mapping that does not validate; carries every issue found
│       └── MappingIncompatible   a valid mapping a running bridge cannot take without a restart
├── CodecError              a value that does not fit its register field
├── StationError            a PLC that did not answer as the handshake requires
├── DecisionRequired        an engineer's decision is needed first (rerun or fail a lost step)
├── TryLater                refused for now, through no fault of the request: it may succeed later
│   ├── JournalUnavailable  the journal cannot be written (disk full, I/O error, read-only)
│   │   └── AdmissionStopped  an order refused because the journal cannot take it now
│   └── LineFull            an order refused because the line holds as many open orders as it takes
└── OrderRejected           an order that does not fit the mapping; names the field
    ├── UnknownOrder        an order id the bridge has never accepted
    ├── OrderIdRetired      the id of an order retention removed: taken for good
    └── OrderFinished       a cancel of an order that already ended
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from bridge.limits import clip


class BridgeError(Exception):
    """Root of every error linebridge raises on purpose."""


class ConfigurationError(BridgeError):
    """A configuration file that cannot be used as it is."""


def count_option(option: str, value: object, least: int = 1) -> None:
    """A count from `--config` (the command line checks its own): a whole number, `least` or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(f"{option}: must be a whole number of at least {least}, got {value!r}")


def amount_option(option: str, value: object, must: str, *, zero: bool = True) -> float:
    """An amount from `--config` (MiB, days, seconds): a finite number, 0 or more (more than 0 with
    `zero=False`); `must` says so in the message ("MiB, 0 or more")."""
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value < 0 or (value == 0 and not zero):  # type: ignore[operator]
        raise ConfigurationError(f"{option}: must be {must}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MappingIssue:
    """One problem in a mapping, located by its dotted YAML path."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class MappingError(ConfigurationError):
    """A mapping that does not validate. Every issue is listed, not just the first."""

    def __init__(self, issues: list[MappingIssue], *, source: str = "") -> None:
        self.issues = issues
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{head}{len(issues)} error(s) in mapping\n{lines}")


class MappingIncompatible(MappingError):
    """A valid mapping that changes what only a restart may change (bridge/mapping/reload.py)."""


class CodecError(BridgeError, ValueError):
    """A value that cannot be encoded into (or decoded from) its register field."""


class StationError(BridgeError):
    """A station PLC that failed, refused or answered garbage; the cause is chained."""

    def __init__(self, message: str, *, station: str) -> None:
        self.station = station
        super().__init__(f"station {station}: {message}")


class ParameterMismatch(StationError):
    """Parameters or a setpoint read back from a PLC differ from what was written: a step with
    such parameters must not start, and such a setpoint write is reported failed."""


class DecisionRequired(BridgeError):
    """A held station cannot be cleared without saying what becomes of the step its PLC lost."""


class TryLater(BridgeError):
    """A request refused for now, through no fault of its own: the faces answer every kind the
    same way (OPC UA BadResourceUnavailable, ISA-95 UnableToAccept, HTTP 503), with `reason`."""

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class JournalUnavailable(TryLater):
    """The journal could not commit: nothing the write was for may happen until it can."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        super().__init__(f"journal {path} cannot be written: {reason}", reason)


class AdmissionStopped(JournalUnavailable):
    """New orders are refused while the journal cannot be written (accepting one means journaling
    it); running steps wait, and everything resumes by itself once it can."""


class JournalSpaceLow(TryLater):
    """An order refused because the journal's disk is down to the space kept for the orders under
    way: whatever filled it, the steps already accepted can still be journaled and finish."""

    def __init__(self, folder: object, free_bytes: int, kept_bytes: int) -> None:
        self.free, self.kept = free_bytes, kept_bytes
        reason = (
            f"the journal's disk ({folder}) is nearly full: {free_bytes / 2**20:.1f} MiB free, under the"
            f" {kept_bytes / 2**20:.1f} MiB kept for the orders under way (--journal-reserve-mb)"
        )
        super().__init__(reason, reason)


class LineFull(TryLater):
    """An order refused because the line, or its client, holds as many open orders as it may: not
    the order's fault, and not for ever (it is taken once some have finished)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, reason)


class OrderRejected(BridgeError):
    """An order that does not fit the mapping; `field` names the offending input."""

    def __init__(self, reason: str, *, field: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class UnknownOrder(OrderRejected):
    """An order id the bridge has never accepted."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order {clip(repr(order_id), 60)}", field="order_id")


class WrongOrderState(OrderRejected):
    """A request that does not apply to the order in the state it is in (start a running order,
    clear one that has not ended)."""

    def __init__(self, order_id: str, state: str, action: str, applies_to: str) -> None:
        self.state = state
        reason = f"order {clip(repr(order_id), 60)} is {state}: {action} applies to {applies_to}"
        super().__init__(reason, field="order_id")


class OrderFinished(OrderRejected):
    """A cancel of an order that already completed or faulted: there is nothing left to stop, and
    answering "cancelled" would tell the caller (and the audit) something that did not happen."""

    def __init__(self, order_id: str, state: str) -> None:
        self.state = state
        reason = f"order {clip(repr(order_id), 60)} is already {state}: nothing to cancel"
        super().__init__(reason, field="order_id")


class OrderIdRetired(OrderRejected):
    """A new order under the id of one that finished and has left the journal by retention: the
    journal no longer holds it to answer "same order, already done", and running it would make it
    twice."""

    def __init__(self, finished: datetime) -> None:
        self.finished = finished
        reason = (
            f"an order with this id finished {finished:%Y-%m-%d %H:%M} UTC and has since left the journal"
            " (--journal-retention-days); a new order needs a new id"
        )
        super().__init__(reason, field="order_id")
