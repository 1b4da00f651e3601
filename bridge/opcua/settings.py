"""What the OPC UA face is told at start: where it listens, what it keeps, what a client may claim."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bridge.opcua.endpoint_security import SecuritySettings
from bridge.opcua.names import DEFAULT_ENDPOINT
from bridge.opcua.order_nodes import KEEP_FULL
from bridge.opcua.session_limits import SessionLimits


@dataclass(frozen=True)
class OpcUaSettings:
    endpoint: str = DEFAULT_ENDPOINT
    order_retention_s: float = 3600.0
    # finished orders that keep their nodes; older ones are built again from the journal when asked for
    finished_in_full: int = KEEP_FULL
    history_retention_s: float = 7 * 24 * 3600.0
    history_file: Path | None = None  # None: DATA_DIR/history.sqlite
    server_name: str = "linebridge"
    security: SecuritySettings | None = None  # None: the None endpoint only, anonymous (local demo)
    allow_insecure_remote: bool = False  # serve the None endpoint on a non-loopback address
    limits: SessionLimits = field(default_factory=SessionLimits)  # what one client may claim
