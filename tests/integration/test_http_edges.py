"""The HTTP face tried as a hostile page, a careless script and a flood would try it: foreign Host
headers, cross-site writes (in real Chromium and by plain HTTP), bodies too big or too deep,
half-open connections at a low open-file limit, and password guessing beside a real operator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
from contextlib import asynccontextmanager

import httpx
import pytest
from structlog.testing import capture_logs

from bridge.domain.model import OrderState
from bridge.http.guard import HttpLimits
from bridge.http.server import HttpFace, HttpSettings
from bridge.mapping import apply_deployment
from bridge.opcua.endpoint_security import SecuritySettings
from bridge.security.users import add_user
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from tests.integration.browser import CHROMIUM, FLAGS, needs_chromium
from tests.integration.loopback import loopback_server

ORDER = {"order_id": "H-1", "product": "AC-W", "options": {}}


@asynccontextmanager
async def http_bridge(mapping, data_dir, *, limits=None, security=None):
    ports = dict.fromkeys(mapping.stations, 0)
    async with SimulatedLine(mapping, ports=ports, speed=0, seed=4) as line:
        bridge = Bridge(apply_deployment(mapping, line.endpoints()), BridgeSettings(data_dir=data_dir))
        await bridge.start()
        http = HttpFace(bridge, HttpSettings(port=0, limits=limits or HttpLimits()), security)
        await http.start()
        try:
            yield line, bridge, http
        finally:
            await http.stop()
            await bridge.stop()


async def until_state(bridge, order_id, state, timeout_s=20):
    async with asyncio.timeout(timeout_s):
        while (order := bridge.get(order_id)) is None or order.state != state:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.02)


async def test_foreign_hosts_cross_site_writes_and_bad_bodies_are_refused(ac_mapping, tmp_path):
    async with (
        http_bridge(ac_mapping, tmp_path) as (_line, bridge, http),
        httpx.AsyncClient(base_url=http.address, timeout=5) as web,
    ):
        foreign = await web.get("/api/line", headers={"Host": "attacker.example"})
        assert foreign.status_code == 421
        assert "attacker.example" in foreign.json()["reason"]
        rebound = await web.post("/api/orders", json=ORDER, headers={"Host": "attacker.example:8080"})
        assert rebound.status_code == 421

        as_text = await web.post("/api/orders", content=str(ORDER), headers={"Content-Type": "text/plain"})
        assert as_text.status_code == 415
        as_form = await web.post("/api/orders", data={"order_id": "H-1", "product": "AC-W"})
        assert as_form.status_code == 415
        from_elsewhere = await web.post("/api/orders", json=ORDER, headers={"Origin": "http://evil.example"})
        assert from_elsewhere.status_code == 403
        assert "Origin" in from_elsewhere.json()["reason"]
        referred = await web.post("/api/orders", json=ORDER, headers={"Referer": "http://evil.example/x"})
        assert referred.status_code == 403
        fetched = await web.post("/api/orders", json=ORDER, headers={"Sec-Fetch-Site": "cross-site"})
        assert fetched.status_code == 403
        assert bridge.get("H-1") is None

        as_json = {"Content-Type": "application/json"}
        deep = await web.post("/api/orders", content="[" * 60_000, headers=as_json)
        assert deep.status_code == 400
        assert "nested deeper" in deep.json()["reason"]
        big = await web.post("/api/orders", json={**ORDER, "pad": "x" * 70_000})
        assert big.status_code == 400
        assert "longer than" in big.json()["reason"]
        assert bridge.get("H-1") is None

        ours = await web.post("/api/orders", json=ORDER, headers={"Origin": http.address})
        assert ours.status_code == 200, ours.text
        await until_state(bridge, "H-1", OrderState.COMPLETED)
        again = await web.post("/api/orders/H-1/cancel", json={})
        assert again.status_code == 409
        assert "already completed" in again.json()["reason"]


ATTACK = """<!doctype html><html><body>
<form id="submit" method="POST" enctype="text/plain" action="{base}/api/orders">
<input name='{{"order_id":"CSRF-1","product":"AC-W","options":{{}},"pad":"' value='"}}'></form>
<script>document.getElementById("submit").submit()</script></body></html>"""
CANCEL = """<!doctype html><html><body>
<form id="cancel" method="POST" action="{base}/api/orders/VICTIM-1/cancel"><input name="x" value="1"></form>
<script>document.getElementById("cancel").submit()</script></body></html>"""


@asynccontextmanager
async def attacker_site(pages: dict[str, str]):
    """Another origin (its own port) serving pages that post to the bridge, as any web page may."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ", 2)[1].decode()
        body = pages.get(path, "").encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        await writer.drain()
        writer.close()

    async with loopback_server(serve) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.slow
@needs_chromium
async def test_a_cross_site_form_in_chromium_neither_submits_nor_cancels(ac_mapping, tmp_path):
    playwright = pytest.importorskip("playwright.async_api")
    async with http_bridge(ac_mapping, tmp_path) as (line, bridge, http):
        await line["chassis"].set_fault("stall", 1)
        await bridge.submit("VICTIM-1", "AC-W", {}, quantity=5)
        await until_state(bridge, "VICTIM-1", OrderState.RUNNING)
        pages = {"/submit": ATTACK.format(base=http.address), "/cancel": CANCEL.format(base=http.address)}
        async with attacker_site(pages) as evil, playwright.async_playwright() as p:
            # DNS rebinding: the attacker's name resolves to the bridge's address
            rebinding = [*FLAGS, "--host-resolver-rules=MAP attacker.example 127.0.0.1"]
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=rebinding)
            try:
                page = await browser.new_page()
                port = http.address.rsplit(":", 1)[1]
                rebound = await page.goto(f"http://attacker.example:{port}/api/line")
                assert rebound.status == 421  # the line is not read under a foreign Host
                assert "attacker.example" in await rebound.text()
                for path in ("/submit", "/cancel"):
                    async with page.expect_response(lambda r: r.url.startswith(http.address)) as answer:
                        await page.goto(evil + path)
                    response = await answer.value
                    assert response.status == 403, (path, response.status, await response.text())
                    assert "cross-site request refused" in await response.text()

                # the bridge's own page, same origin, still submits
                await page.goto(http.address + "/")
                status = await page.evaluate(
                    """async () => (await fetch("/api/orders", {method: "POST",
                        headers: {"Content-Type": "application/json"},
                        body: JSON.stringify({order_id: "OWN-1", product: "AC-W", options: {}})})).status"""
                )
                assert status == 200
            finally:
                await browser.close()
        assert bridge.get("CSRF-1") is None
        assert bridge.get("VICTIM-1").state == OrderState.RUNNING
        assert bridge.get("OWN-1") is not None
        await line["chassis"].set_fault("stall", 0)


@contextlib.contextmanager
def open_file_limit(extra: int):
    """This process's soft open-file limit lowered to what it has open now plus `extra`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
async def test_a_flood_of_half_open_connections_is_capped_and_timed_out(ac_mapping, tmp_path):
    limits = HttpLimits(max_connections=40, max_connections_per_client=30, header_timeout_s=1.0)
    async with http_bridge(ac_mapping, tmp_path, limits=limits) as (_line, bridge, http):
        port = int(http.address.rsplit(":", 1)[1])
        link = bridge.links["coil"]
        polls_before = link.counters.polls_done
        flood: list[socket.socket] = []
        # the flood and the bridge share this process's descriptors: 200 of the flood's, up to 200
        # the bridge accepts before it refuses them, and what the process had
        with capture_logs() as logs, open_file_limit(500):
            async with httpx.AsyncClient(base_url=http.address, timeout=5) as web:
                try:
                    for _ in range(200):  # connect and say nothing
                        sock = socket.socket()
                        sock.setblocking(False)
                        with contextlib.suppress(BlockingIOError):
                            sock.connect(("127.0.0.1", port))
                        flood.append(sock)
                    async with asyncio.timeout(10):
                        while http.connections.refused < 100:  # noqa: ASYNC110 - polls state, bounded
                            await asyncio.sleep(0.02)
                    assert http.connections.total <= limits.max_connections
                    # a client of its own still gets an answer (the flood comes from its address too,
                    # so it gets in once the header deadline has closed the flood's connections)
                    async with asyncio.timeout(8):
                        while True:
                            try:
                                reply = await web.get("/api/line")
                                break
                            except httpx.TransportError:
                                await asyncio.sleep(0.1)
                    assert reply.status_code == 200
                    async with asyncio.timeout(10):
                        while http.connections.timed_out < 30:  # noqa: ASYNC110 - polls state, bounded
                            await asyncio.sleep(0.05)
                finally:
                    for sock in flood:
                        sock.close()
        said = [e for e in logs if e["event"] in ("http_connection_refused", "http_header_timeout")]
        assert 1 <= len(said) <= 4, said  # a count every 10 s, not a line per connection
        async with asyncio.timeout(10):
            while link.counters.polls_done <= polls_before + 3:  # noqa: ASYNC110 - telemetry goes on
                await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_guessing_does_not_lock_out_the_operators_browser_and_is_audited_once(ac_mapping, tmp_path):
    users = tmp_path / "users.yaml"
    add_user(users, "olga", "operator", "op-secret-1")
    security = SecuritySettings(pki_dir=tmp_path / "pki", users_file=users, login_backoff_s=5.0)
    async with http_bridge(ac_mapping, tmp_path / "data", security=security) as (_line, bridge, http):
        async with (
            httpx.AsyncClient(base_url=http.address, verify=False, timeout=10) as operator,
            httpx.AsyncClient(base_url=http.address, verify=False, timeout=10) as guesser,
        ):
            first = await operator.get("/api/line", auth=("olga", "op-secret-1"))
            assert first.status_code == 200
            assert "linebridge_device" in operator.cookies  # this browser is known from now on
            for i in range(12):  # the same address, the operator's own user name
                wrong = await guesser.get("/api/line", auth=("olga", f"guess-{i}"))
                assert wrong.status_code == 401
            locked = await guesser.get("/api/line", auth=("olga", "op-secret-1"))
            assert locked.status_code == 401  # a client with no history backs off, right password or not
            own = await operator.post("/api/orders", json=ORDER, auth=("olga", "op-secret-1"))
            assert own.status_code == 200, own.text  # the operator's browser is not locked out
        bridge.refusals.flush()  # as stop() does: what is still counted is written
        records = bridge.journal.load_audit(100)
    refused = [r for r in records if r[1] == "login" and r[4].startswith("refused")]
    assert len(refused) == 11, refused  # ten rows, then one with the count and the last reason
    counted = [int(r[4].split("×")[1].split(" ")[0]) if "×" in r[4] else 1 for r in refused]
    assert sum(counted) == 13, refused  # 12 guesses and the guesser's right password: every one told
