"""The bridge as one object: mapping, journal, station links and engine wired together.

This is the Python API the OPC UA layer (and tests, and scripts) use: `submit`, `cancel`, `get`,
`watch`. It owns the only place where adapters (SQLite, Modbus) meet the domain.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bridge.alarms.book import AlarmBook
from bridge.counters import LinkCounters
from bridge.domain.admission import OpenOrderLimits
from bridge.domain.engine import EngineSettings, LineEngine
from bridge.domain.events import EventHub
from bridge.domain.model import Order, OrderEvent
from bridge.domain.orders import OrderRequest
from bridge.errors import ConfigurationError, MappingIncompatible
from bridge.journal import JOURNAL_FILE, SqliteJournal
from bridge.journal.pruner import JournalPruner
from bridge.lifecycle import cancel_and_wait
from bridge.limits import AUDIT_OUTCOME_CHARS, clip
from bridge.mapping import load_deployment, load_mapping
from bridge.mapping.model import LineMapping
from bridge.mapping.reload import reload_changes
from bridge.modbus import ModbusStationLink, pymodbus_seams
from bridge.modbus.heartbeat import beat
from bridge.modbus.scanner import StationScanner
from bridge.security.refusals import RefusalTally
from bridge.supervise import start_supervised

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BridgeSettings:
    data_dir: Path = Path("var")
    request_timeout_s: float = 1.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    telemetry_interval_s: float = 1.0
    status_poll_s: float = 0.005
    status_poll_max_s: float = 0.1  # the busy poll's ceiling while a step runs (docs/engine.md)
    status_reuse_s: float = 0.05  # a status this young stands in for a new read (docs/handshake.md)
    step_timeout_s: float | None = None
    open_orders: OpenOrderLimits = field(default_factory=OpenOrderLimits)  # what admission refuses past
    heartbeat: bool = True  # write the heartbeat registers the mapping declares
    journal_synchronous: str = "NORMAL"
    journal_reserve_mb: float = 64  # disk space new orders may not take: the orders under way's
    journal_retention_s: float = 0  # older finished orders, audit, alarm history leave the journal; 0: keep
    journal_prune_every_s: float = 3600.0
    mapping_file: Path | None = None  # where the mapping came from: what `reload_mapping` reads again
    deployment_file: Path | None = None


class Bridge:
    def __init__(self, mapping: LineMapping, settings: BridgeSettings | None = None) -> None:
        self.mapping = mapping
        self.settings = settings = settings or BridgeSettings()
        self.journal = SqliteJournal(
            settings.data_dir / JOURNAL_FILE,
            synchronous=settings.journal_synchronous,
            keep_free_mb=settings.journal_reserve_mb,
        )
        self.pruner = JournalPruner(
            self.journal, settings.journal_retention_s, lambda: self.mapping.stations, self.audit,
            every_s=settings.journal_prune_every_s,
        )  # fmt: skip
        self.refusals = RefusalTally(self._record)  # a client's repeated refusals: a few rows and a count
        self.links = {
            station: ModbusStationLink(
                mapping,
                station,
                timeout_s=settings.request_timeout_s,
                backoff_initial_s=settings.backoff_initial_s,
                backoff_max_s=settings.backoff_max_s,
                beat_before_start=settings.heartbeat,
            )
            for station in mapping.stations
        }
        # The one way out of the core: every face subscribes here (docs/events.md).
        self.events = EventHub()
        self.engine = LineEngine(
            mapping,
            self.journal,
            self.links,
            EngineSettings(
                status_poll_s=settings.status_poll_s,
                status_poll_max_s=settings.status_poll_max_s,
                status_reuse_s=settings.status_reuse_s,
                step_timeout_s=settings.step_timeout_s,
                open_orders=settings.open_orders,
            ),
            self.events,
        )
        self.alarms = AlarmBook(mapping, self.events, self.journal, self.held)
        self._link_tasks: list[asyncio.Task[None]] = []  # heartbeats and scanners: the links' own work
        self._journal_tasks: list[asyncio.Task[None]] = []  # retention
        # Set-up that must be done before any station link runs (OpcUaFace.prepare: seconds of CPU on
        # the loop, which the links' progress watchdog would take for dead PLCs); see start().
        self.before_links: list[Callable[[], Awaitable[object]]] = []
        default_s = settings.telemetry_interval_s
        self.scanners = {
            station: StationScanner(
                link, mapping.station_type(station).scan_interval_s or default_s, self.events.publish
            )
            for station, link in self.links.items()
        }

    async def start(self) -> None:
        try:
            for prepare in self.before_links:
                await prepare()
        except BaseException:
            self.journal.close()  # nothing else runs yet: the journal is all there is to close
            raise
        pymodbus_seams.check()  # a pymodbus without what the links hook stops here, with the names
        if self.settings.heartbeat:  # before the engine: a PLC that watches it sees the bridge first
            for station, link in self.links.items():
                if link.heartbeat is not None:
                    start_supervised(self._link_tasks, f"heartbeat-{station}", functools.partial(beat, link))
        await self.engine.start()
        await self.alarms.start()  # subscribes before the first poll
        if self.settings.journal_retention_s > 0:
            start_supervised(self._journal_tasks, "journal-retention", self.pruner.run)
        if self.settings.telemetry_interval_s > 0:
            for station, scanner in self.scanners.items():
                start_supervised(self._link_tasks, f"scanner-{station}", scanner.run)
        log.info("bridge_started", line=self.mapping.line.name, data_dir=str(self.settings.data_dir))

    async def stop(self) -> None:
        await cancel_and_wait(self._link_tasks)
        await cancel_and_wait(self._journal_tasks)
        await self.alarms.stop()
        await self.engine.stop()
        for link in self.links.values():
            await link.close()
        self.refusals.flush()  # what is still counted is written
        self.journal.close()
        log.info("bridge_stopped")

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def submit(
        self,
        order_id: Any,
        product: Any,
        options: Mapping[str, Any] | None = None,
        *,
        quantity: Any = None,
        priority: Any = 0,
        client: str = "",
    ) -> Order:
        """`client`: who submits, as a face can tell (a user, or anonymous at an address), for the
        per-client limit of open orders (docs/engine.md, "Open-order limits")."""
        request = OrderRequest(order_id, product, options, quantity, priority)
        return await self.engine.submit(request, client=client)

    def refusing(self) -> str | None:
        """Why a new order from anyone would be refused now, or None: for a face to say before
        someone submits (the journal failing, its disk down to the space kept, the line full)."""
        if (engine := self.engine.refusing()) is not None:
            return engine
        short = self.journal.space.short()
        return short.reason if short is not None else None

    async def cancel(self, order_id: str) -> Order:
        return await self.engine.cancel(order_id)

    async def write_setpoint(self, station: str, name: str, value: Any) -> None:
        """Change a setpoint the mapping declares for `station`: checked against the mapping before
        anything is written (CodecError), read back after (ParameterMismatch, a StationError)."""
        await self.links[station].write_setpoint(name, value)
        log.info("setpoint_written", line=self.mapping.line.name, station=station, setpoint=name, value=value)

    async def reload_mapping(self) -> list[str]:
        """Read the mapping (and deployment) files again and take what a running line may take: new
        parameter derivations, for orders accepted from now on. Returns the changed paths; raises
        MappingError if the files do not validate, MappingIncompatible if they change anything else
        (every such path named), and then nothing changes."""
        if self.settings.mapping_file is None:
            raise ConfigurationError("this bridge was not started from a mapping file: nothing to reload")
        new = load_mapping(self.settings.mapping_file)
        if self.settings.deployment_file is not None:
            new = load_deployment(new, self.settings.deployment_file)
        changed, issues = reload_changes(self.mapping, new)
        if issues:
            raise MappingIncompatible(issues, source=f"{self.settings.mapping_file} (reload)")
        if changed:
            self.mapping = new
            self.engine.reload(new)
        log.info("mapping_reloaded", line=new.line.name, changed=changed)
        return changed

    def get(self, order_id: str) -> Order | None:
        return self.engine.get(order_id)

    def audit(self, event: str, user: str, thumbprint: str, outcome: str, channel: str = "") -> bool:
        """One audit record from either face (OPC UA, HTTP): one log line (clipped) now, and a row
        in the journal written with the others queued (one transaction per batch, off the loop).

        A refusal (an outcome that begins "refused", or a request `denied` for its role) is tallied:
        the first ten from one client in a minute are recorded as they come, the rest as one row
        with their count (security/refusals.py), so a client looping on a refused call fills no
        disk. False for a refusal only counted: a face then neither logs nor announces it either."""
        if outcome.startswith("refused") or event == "denied":
            return self.refusals.refused(event, user, thumbprint, outcome, channel)
        self._record(event, user, thumbprint, outcome, channel)
        return True

    def _record(self, event: str, user: str, thumbprint: str, outcome: str, channel: str) -> None:
        outcome, user = clip(outcome, AUDIT_OUTCOME_CHARS), clip(user, 128)
        log.info(
            "audit", audit_event=event, user=user, thumbprint=thumbprint, channel=channel, outcome=outcome
        )
        self.journal.add_audit(event, user, thumbprint, outcome, channel)

    @property
    def audit_rows_lost(self) -> int:
        """Audit records only logged: the journal could not take them."""
        return self.journal.audit_rows_lost

    def counters(self, station: str) -> LinkCounters:
        """What the station's link has counted so far (read it, never change it): for a face that
        reads on demand (Prometheus scrapes) rather than following the scans."""
        return self.links[station].counters

    def held(self, station: str, status_invalid: bool = False) -> str | None:
        """Why the station does not work now though its PLC answers, or None."""
        engine = self.engine
        return (
            engine.station_errors.get(station)
            or ("status block holds garbage" if status_invalid else None)
            or engine.journal_fault  # a journal that cannot be written stands the whole line
        )

    def watch(self) -> AsyncIterator[OrderEvent]:
        return self.engine.watch()

    async def wait_idle(self) -> None:
        await self.engine.wait_idle()
