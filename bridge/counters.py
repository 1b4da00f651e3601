"""What a station link counts, and what each count means: one place for the link that counts,
the events that carry a copy, and the faces that show them (OPC UA Diagnostics, Prometheus)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LinkCounters:
    connected: bool = False
    requests: int = 0
    errors: int = 0
    reconnects: int = 0
    last_error: str = ""
    retries: int = 0  # tries after the first of a request (a lost frame, a reset, a busy PLC)
    timeouts: int = 0  # tries that got no answer in time
    outages: int = 0  # times the station was declared offline
    rebuilds: int = 0  # times the watchdog found the link stuck and gave it a new connection
    stale_replies: int = 0  # replies to another request (a late one, a wrong transaction or device id)
    telemetry_requests_per_poll: int = 0
    polls_done: int = 0  # telemetry polls started on schedule
    polls_missed: int = 0  # due times skipped because the previous poll was still running


# LinkCounters' counts and what each counts, in one place for the OPC UA Diagnostics and the
# Prometheus metrics; the first two move on every poll (published at most once a second).
COUNTS: tuple[tuple[str, str], ...] = (
    ("requests", "Modbus requests sent (every try)"),
    ("polls_done", "telemetry polls started on schedule"),
    ("errors", "requests that failed after all their tries"),
    ("retries", "tries after the first of a request"),
    ("timeouts", "tries that got no answer in time"),
    ("outages", "times the station was declared offline"),
    ("stale_replies", "replies to another request, skipped"),
    ("rebuilds", "times the watchdog found the link stuck and rebuilt it"),
    ("reconnects", "connections made again after a loss"),
    ("polls_missed", "telemetry due times skipped because a poll was still running"),
)
BUSY_COUNTS = ("requests", "polls_done")
