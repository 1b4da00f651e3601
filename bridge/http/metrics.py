"""Prometheus metrics of the line, read from the engine and the station links at scrape time.

Counters the links keep anyway (requests, errors, …) are not counted twice: a collector reads
them (`Bridge.counters`) when Prometheus scrapes. Only what has no counter elsewhere is observed
from the event stream as it happens: each Modbus request's duration (carried by the station
scans) and each closed step's duration, into histograms; orders that end are counted too. Alarms
are read from the alarm book at scrape time.
docs/metrics.md lists the series; docs/grafana-dashboard.json shows them.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.counters import COUNTS
from bridge.domain.events import OrderChanged, StationScanned, StepChanged
from bridge.domain.model import OrderState, StepPhase
from bridge.follow import Follower
from bridge.service import Bridge

REQUEST_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STEP_BUCKETS = (0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


# What OPC UA clients hold now, and were refused since start by limit (the OPC UA face's claims)
ClaimsSource = Callable[[], tuple[Mapping[str, int], Mapping[str, int]]]


class LineMetrics(Collector):
    """One registry per bridge (tests run several in a process)."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.opcua_claims: ClaimsSource | None = None  # the OPC UA face's, when it runs
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "linebridge_station_request_seconds", "duration of one Modbus request, all its tries",
            ["station"], buckets=REQUEST_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.step_seconds = Histogram(
            "linebridge_step_seconds", "a step's duration, start to result, per station",
            ["station"], buckets=STEP_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.orders_finished = Counter(
            "linebridge_orders_finished",
            "orders that ended, by final state",
            ["state"],
            registry=self.registry,
        )
        for state in (s for s in OrderState if s.is_final):
            self.orders_finished.labels(state.value)  # every series from the start, at 0
        # which bridge answers: the dashboard's $job and $instance variables are read from it
        build = Info("linebridge_build", "the bridge's version and its libraries'", registry=self.registry)
        build.info(
            {name: _version(name) for name in ("linebridge", "asyncua", "pymodbus")}
            | {"python": platform.python_version(), "line": bridge.mapping.line.name}
        )
        self.registry.register(self)
        self._observe_request = {}
        for name in bridge.mapping.stations:
            self._observe_request[name] = self.request_seconds.labels(name).observe
            self.step_seconds.labels(name)
        kinds = (OrderChanged, StepChanged, StationScanned)
        self.follower = Follower(bridge.events, "metrics", kinds, self._on_event)

    async def _on_event(self, event: OrderChanged | StepChanged | StationScanned) -> None:
        if isinstance(event, StationScanned):
            observe = self._observe_request[event.station]
            for seconds in event.request_seconds:
                observe(seconds)
        elif isinstance(event, StepChanged):
            step = event.step
            if event.phase == StepPhase.CLOSED and step.finished_at is not None:
                self.step_seconds.labels(step.station).observe(
                    (step.finished_at - step.started_at).total_seconds()
                )
        elif event.event.state.is_final:  # an order's final state is told once
            self.orders_finished.labels(event.event.state.value).inc()

    def collect(self) -> Iterator[Metric]:
        counted = [(name, self.bridge.counters(name)) for name in self.bridge.mapping.stations]
        for counter, text in COUNTS:
            family = CounterMetricFamily(f"linebridge_station_{counter}", text, labels=["station"])
            for name, counters in counted:
                family.add_metric([name], getattr(counters, counter))
            yield family
        connected = GaugeMetricFamily(
            "linebridge_station_connected", "1 while the PLC answers", labels=["station"]
        )
        for name, counters in counted:
            connected.add_metric([name], 1.0 if counters.connected else 0.0)
        yield connected
        errors = self.bridge.engine.station_errors
        held = GaugeMetricFamily(
            "linebridge_station_held",
            "1 while a station is held for a handshake violation",
            labels=["station"],
        )
        for name, _ in counted:
            held.add_metric([name], 1.0 if name in errors else 0.0)
        yield held
        active = {state: 0 for state in OrderState if not state.is_final}
        for order in self.bridge.engine.active_orders():
            if order.state in active:
                active[order.state] += 1
        orders = GaugeMetricFamily("linebridge_orders", "orders with work left, by state", labels=["state"])
        for state, count in active.items():
            orders.add_metric([state.value], count)
        yield orders
        free, kept = self.bridge.journal.space.room()
        yield GaugeMetricFamily("linebridge_journal_disk_free_bytes", "free on the journal disk", value=free)
        yield GaugeMetricFamily(
            "linebridge_journal_disk_kept_bytes", "below this much free, new orders are refused", value=kept
        )
        yield from self._alarms()
        if self.opcua_claims is not None:
            yield from self._claims(*self.opcua_claims())

    @staticmethod
    def _claims(held: Mapping[str, int], refused: Mapping[str, int]) -> Iterator[Metric]:
        holding = GaugeMetricFamily(
            "linebridge_opcua_clients_hold", "what OPC UA clients hold now", labels=["what"]
        )
        for what, count in held.items():
            holding.add_metric([what], count)
        yield holding
        refusals = CounterMetricFamily(
            "linebridge_opcua_refused", "OPC UA requests refused past a client's share", labels=["limit"]
        )
        for limit, count in refused.items():
            refusals.add_metric([limit], count)
        yield refusals

    def _alarms(self) -> Iterator[Metric]:
        """Every alarm's state, each series from the start (a dashboard's table and an alert rule
        read `== 1`); severity is a value, not a label, so a limit alarm that escalates stays one series."""
        described = {
            "active": ("linebridge_alarm_active", "1 while the alarm is active"),
            "unacked": ("linebridge_alarm_unacknowledged", "1 while the alarm waits for an acknowledge"),
            "shelved": ("linebridge_alarm_shelved", "1 while an operator shelved it"),
            "disabled": ("linebridge_alarm_disabled", "1 while an operator disabled it (the others read 0)"),
            "severity": ("linebridge_alarm_severity", "the active alarm's severity (1-1000), else 0"),
        }
        families = {
            key: GaugeMetricFamily(name, text, labels=["station", "alarm"])
            for key, (name, text) in described.items()
        }
        for state in self.bridge.alarms.states.values():
            key = [state.definition.station, state.definition.name]
            on = state.enabled  # a disabled alarm's state is no news: no alert rule fires on it
            families["active"].add_metric(key, float(on and state.active))
            families["unacked"].add_metric(key, float(on and not state.acked))
            families["shelved"].add_metric(key, float(on and state.shelved))
            families["disabled"].add_metric(key, float(not on))
            families["severity"].add_metric(key, float(state.severity if on and state.active else 0))
        yield from families.values()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"
