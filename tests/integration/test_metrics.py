"""Prometheus /metrics served by the bridge over the real simulated line, scraped over HTTP; the
shipped Grafana dashboard asks only for series that /metrics has."""

from __future__ import annotations

import asyncio
import json
import re
from http.client import HTTPConnection
from pathlib import Path

import pytest

from bridge.domain.events import AlarmChanged
from bridge.errors import ConfigurationError
from bridge.http.server import HttpFace, HttpSettings
from bridge.mapping import apply_deployment
from bridge.opcua.face import OpcUaFace, OpcUaSettings
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from tests.integration.http_calls import scrape, value
from tests.integration.orders import run_orders

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


async def test_metrics_follow_the_line(ac_mapping, tmp_path):
    ports = dict.fromkeys(ac_mapping.stations, 0)
    async with SimulatedLine(ac_mapping, ports=ports, speed=0, seed=2) as line:
        bridge = Bridge(
            apply_deployment(ac_mapping, line.endpoints()),
            BridgeSettings(data_dir=tmp_path, telemetry_interval_s=0.1),
        )
        await bridge.start()
        http = HttpFace(bridge, HttpSettings(port=0))
        await http.start()
        try:
            await run_orders(bridge, "M", 3)
            alarms = bridge.events.subscribe("test", AlarmChanged)
            await bridge.write_setpoint("coil", "furnace_setpoint_c", 650)  # the furnace runs hot
            async with asyncio.timeout(10):
                while (await alarms.get()).alarm.alarm_id != "coil.furnace_temp_c":
                    pass
            series = await asyncio.to_thread(scrape, http.address)
        finally:
            await http.stop()
            await bridge.stop()
    assert value(series, "linebridge_orders_finished_total", state="completed") == 3
    assert value(series, "linebridge_orders_finished_total", state="faulted") == 0
    assert value(series, "linebridge_orders", state="running") == 0
    free = value(series, "linebridge_journal_disk_free_bytes")
    assert free > value(series, "linebridge_journal_disk_kept_bytes") > 0  # 64 MiB, or a tenth of the disk
    for station in ("chassis", "coil", "compressor", "charge", "panel", "pack"):
        assert value(series, "linebridge_step_seconds_count", station=station) == 3
        assert value(series, "linebridge_station_connected", station=station) == 1
        requests = value(series, "linebridge_station_requests_total", station=station)
        assert requests > 3 * 4  # parameters, start, status, results, acknowledge per step at least
        observed = value(series, "linebridge_station_request_seconds_count", station=station)
        assert 0 < observed <= requests  # one observation per request, its tries counted once
        assert value(series, "linebridge_station_polls_done_total", station=station) >= 1
        assert value(series, "linebridge_station_errors_total", station=station) == 0
    furnace = {"station": "coil", "alarm": "furnace_temp_c"}
    assert value(series, "linebridge_alarm_active", **furnace) == 1
    assert value(series, "linebridge_alarm_severity", **furnace) == 700
    assert value(series, "linebridge_alarm_unacknowledged", **furnace) == 1
    assert value(series, "linebridge_alarm_shelved", **furnace) == 0
    assert value(series, "linebridge_alarm_active", station="chassis", alarm="offline") == 0
    assert value(series, "linebridge_step_seconds_count", station="test_a") + value(
        series, "linebridge_step_seconds_count", station="test_b"
    ) == 3


async def test_metrics_answers_at_its_own_path_with_the_build(ac_mapping, tmp_path):
    """`curl http://…/metrics` prints the series: no redirect to /metrics/ that curl would not follow."""
    bridge = Bridge(ac_mapping, BridgeSettings(data_dir=tmp_path, telemetry_interval_s=0))
    http = HttpFace(bridge, HttpSettings(port=0))
    await http.start()
    try:
        host, port = http.address.removeprefix("http://").rsplit(":", 1)

        def get() -> tuple[int, str]:
            connection = HTTPConnection(host, int(port), timeout=5)
            try:
                connection.request("GET", "/metrics")
                reply = connection.getresponse()
                return reply.status, reply.read().decode()
            finally:
                connection.close()

        status, text = await asyncio.to_thread(get)
    finally:
        await http.stop()
    assert status == 200
    (build,) = [line for line in text.splitlines() if line.startswith("linebridge_build_info{")]
    assert 'line="ac_line"' in build
    assert re.search(r'asyncua="2\.1\.\d+"', build), build
    assert 'pymodbus="3.' in build
    assert build.endswith(" 1.0")


def test_the_dashboard_imports_with_a_data_source_and_tells_bridges_apart():
    """Grafana's import dialog asks for the data source (`__inputs`); $job, $instance and $station
    pick one bridge's series; rates follow the scrape interval ($__rate_interval)."""
    dashboard = json.loads(DASHBOARD.read_text())
    (source,) = dashboard["__inputs"]
    assert (source["type"], source["pluginId"]) == ("datasource", "prometheus")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "instance", "station"}
    assert variables["datasource"]["current"]["value"] == "${" + source["name"] + "}"
    assert "linebridge_build_info" in variables["instance"]["definition"]
    assert variables["station"]["multi"] is True
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        for selector in re.findall(r"linebridge_[a-z_]+(\{[^}]*\})?", expr):
            assert 'job=~"$job"' in selector, expr
            assert 'instance=~"$instance"' in selector, expr
        assert "[1m]" not in expr, expr
        assert "[5m]" not in expr, expr
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "1h"), expr
    assert sum('station=~"$station"' in e for e in exprs) >= 10


async def test_the_dashboard_asks_only_for_what_metrics_has(ac_mapping, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    wanted = {name for expr in exprs for name in re.findall(r"\blinebridge_[a-z_]+", expr)}
    assert len(wanted) >= 10
    bridge = Bridge(ac_mapping, BridgeSettings(data_dir=tmp_path, telemetry_interval_s=0))
    face = OpcUaFace(bridge, OpcUaSettings(endpoint="opc.tcp://127.0.0.1:0/"))
    await face.prepare()  # its clients' claims: the server made, not listening
    http = HttpFace(bridge, HttpSettings(port=0))
    http.metrics.opcua_claims = face.claims  # as `linebridge run` wires it
    await http.start()
    try:
        series = await asyncio.to_thread(scrape, http.address)
    finally:
        await http.stop()
    names = {key.split("{")[0] for key in series}
    assert wanted <= names, wanted - names
    assert {p["id"] for p in dashboard["panels"]} == set(range(1, len(dashboard["panels"]) + 1))


def test_beyond_loopback_only_when_asked():
    HttpSettings("127.0.0.1", 8080).check_exposure(False)
    HttpSettings("::1", 8080).check_exposure(False)
    with pytest.raises(ConfigurationError, match=r"without --security: no login.*--allow-insecure-remote"):
        HttpSettings("0.0.0.0", 8080).check_exposure(False)
    HttpSettings("0.0.0.0", 8080).check_exposure(True)  # asked for: served, with a warning
    HttpSettings("0.0.0.0", 8080).check_exposure(False, secured=True)  # users, roles and TLS


def test_an_http_address_is_checked():
    assert HttpSettings.parse("0.0.0.0:9100") == HttpSettings("0.0.0.0", 9100)
    assert HttpSettings.parse(":9100") == HttpSettings("127.0.0.1", 9100)
    assert HttpSettings.parse("[::1]:9100") == HttpSettings("::1", 9100)
    for bad in ("9100", "host:", "host:99999", "host:http"):
        with pytest.raises(ConfigurationError, match="expected HOST:PORT"):
            HttpSettings.parse(bad)


async def test_a_taken_port_is_one_clear_error(ac_mapping, tmp_path):
    bridge = Bridge(ac_mapping, BridgeSettings(data_dir=tmp_path, telemetry_interval_s=0))
    first = HttpFace(bridge, HttpSettings(port=0))
    await first.start()
    try:
        port = int(first.address.rsplit(":", 1)[1])
        with pytest.raises(ConfigurationError, match=f"HTTP 127.0.0.1:{port}: cannot listen"):
            await HttpFace(bridge, HttpSettings(port=port)).start()
    finally:
        await first.stop()
