"""The live line view in a real browser: headless Chromium (Debian's) driven by Playwright, against
a bridge over the simulated line. A screenshot is kept in the test's folder when a check fails."""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bridge.domain.admission import OpenOrderLimits
from bridge.http.server import HttpFace, HttpSettings
from bridge.mapping import apply_deployment
from bridge.opcua.endpoint_security import SecuritySettings
from bridge.security.users import add_user
from bridge.service import Bridge, BridgeSettings
from plc_sim.line import SimulatedLine
from tests.integration.browser import CHROMIUM, FLAGS, needs_chromium
from tests.integration.http_calls import get_json, get_status, post_json
from tests.integration.opcua_rig import opcua_rig

playwright = pytest.importorskip("playwright.async_api")
pytestmark = [pytest.mark.slow, needs_chromium]


@asynccontextmanager
async def served_line(mapping, data_dir, security=None, **settings):
    """The simulated line, a bridge on it polling telemetry every 0.2 s, and its HTTP face (HTTPS
    with `security`); the face and the bridge stopped at the end."""
    async with SimulatedLine(mapping, ports=dict.fromkeys(mapping.stations, 0), speed=0, seed=4) as line:
        config = BridgeSettings(data_dir=data_dir, telemetry_interval_s=0.2, **settings)
        bridge = Bridge(apply_deployment(mapping, line.endpoints()), config)
        await bridge.start()
        http = HttpFace(bridge, HttpSettings(port=0), security)
        await http.start()
        try:
            yield line, bridge, http
        finally:
            await http.stop()
            await bridge.stop()


@asynccontextmanager
async def browsed_line(mapping, tmp_path, **settings):
    """`served_line` with headless Chromium launched on it, and the folder screenshots go to
    ($LINEBRIDGE_SCREENSHOTS, else the test's)."""
    shots = Path(os.environ.get("LINEBRIDGE_SCREENSHOTS") or tmp_path)
    os.makedirs(shots, exist_ok=True)
    async with (
        served_line(mapping, tmp_path / "data", **settings) as (line, bridge, http),
        playwright.async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield line, bridge, http, browser, shots
        finally:
            await browser.close()


async def laid_out_height(page, selector: str) -> float:
    """The element's height once it has one: twice in fresh-clone runs a station box measured right
    after its contents were waited for had no size (None from Playwright, then 0), which no
    in-tree run reproduced; the page draws every box with a min-height."""
    handle = await page.wait_for_function(
        "sel => { const e = document.querySelector(sel); const h = e && e.getBoundingClientRect().height;"
        " return h > 0 ? h : null; }",
        arg=selector, timeout=5_000,
    )  # fmt: skip
    return await handle.json_value()


async def box(page, selector: str) -> dict[str, float]:
    """Where an element is, found and measured in one call: the view redraws the line on every poll,
    and a box found in one call may be replaced before it is measured in the next."""
    return await page.eval_on_selector(
        selector, "e => { const r = e.getBoundingClientRect(); return {y: r.y, height: r.height}; }"
    )


async def test_view_submit_progress_and_refusal_in_a_browser(ac_mapping, tmp_path):
    async with served_line(ac_mapping, tmp_path) as (line, bridge, http):
        chassis = line["chassis"]
        await chassis.set_fault("stall", 1)  # the first step holds until the page has seen it run
        async with playwright.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = await browser.new_page()
            try:
                await page.goto(http.address + "/")
                await page.wait_for_selector("body[data-ready=yes]", timeout=10_000)
                assert await page.locator(".station").count() == 8
                assert await page.title() == "linebridge"
                pack = '.station[data-station="pack"][data-state="idle"]'
                await page.wait_for_selector(pack, timeout=10_000)  # polled, answering
                trend = '.station[data-station="coil"] [data-tag="furnace_temp_c"] svg.trend polyline'
                # the last polls' sparkline (flat on the mapping's range: "attached", not "visible")
                await page.wait_for_selector(trend, state="attached", timeout=10_000)

                # a customised order through the form generated from the mapping
                await page.fill("#order-id", "WEB-1")
                await page.select_option("#opt-capacity_btu", "24000")
                await page.select_option("#opt-panel_color", '"ocean_blue"')
                await page.fill("#opt-engraving", "ANNA")
                await page.click("#submit")
                await page.wait_for_selector("#accepted:has-text('accepted WEB-1')", timeout=10_000)
                cell = 'tr[data-order="WEB-1"] td.cell.running'
                await page.wait_for_selector(cell, timeout=10_000)  # at chassis, shown running
                assert "chassis" in await page.locator(cell).first.inner_text()
                assert bridge.get("WEB-1").options["engraving"] == "ANNA"
                await chassis.set_fault("stall", 0)
                state = 'tr[data-order="WEB-1"] td.order-state:has-text("completed")'
                await page.wait_for_selector(state, timeout=20_000)  # station by station to the end
                assert await page.locator('tr[data-order="WEB-1"] td.cell.closed').count() == 7
                if shot := __import__("os").environ.get("LINEBRIDGE_SCREENSHOT"):
                    await page.screenshot(path=shot, full_page=True)

                # a refused option, explained with the OPC UA method's words
                await page.fill("#order-id", "WEB-2")
                await page.fill("#opt-engraving", "x" * 40)
                await page.click("#submit")
                await page.wait_for_selector("#refusal:has-text('refused')", timeout=10_000)
                refusal = await page.inner_text("#refusal")
                assert "engraving" in refusal
                assert bridge.get("WEB-2") is None
            except BaseException:
                await page.screenshot(path=str(tmp_path / "line-view-failure.png"), full_page=True)
                raise
            finally:
                await browser.close()
        # without --security too, each write is in the journal's audit, as an anonymous OPC UA call's is
        records = bridge.journal.load_audit(50)  # at, event, user, thumbprint, outcome, channel
    submits = [(user, outcome.split(":")[0], channel) for _, event, user, _, outcome, channel in records
               if event == "order_submit"]  # fmt: skip
    expected = [("anonymous", "ok WEB-1"), ("anonymous", "refused WEB-2")]
    assert [(user, outcome) for user, outcome, _ in submits] == expected
    assert all(channel.startswith("http 127.0.0.1:") for _, _, channel in submits)


async def test_with_security_the_page_needs_a_login_and_an_operator_to_submit(ac_mapping, tmp_path):
    """--security: HTTPS with the bridge's own certificate, the users file's users; an observer
    sees the line but is refused a submit; an operator submits; both audited in the journal."""
    users = tmp_path / "users.yaml"
    add_user(users, "olga", "operator", "op-secret-1")
    add_user(users, "vic", "observer", "obs-secret-1")
    security = SecuritySettings(pki_dir=tmp_path / "pki", users_file=users)
    async with served_line(ac_mapping, tmp_path / "data", security) as (_line, bridge, http):
        assert http.address.startswith("https://")
        async with playwright.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                anonymous = await browser.new_context(ignore_https_errors=True)
                reply = await anonymous.request.get(http.address + "/")
                assert reply.status == 401  # (a browser would ask for a user and password)
                assert "Basic" in reply.headers["www-authenticate"]
                wrong = await browser.new_context(
                    ignore_https_errors=True, http_credentials={"username": "vic", "password": "nope"}
                )
                reply = await wrong.request.get(http.address + "/api/line")
                assert reply.status == 401

                for user, password, verdict in (
                    ("vic", "obs-secret-1", "refused: user vic (observer) may not submit"),
                    ("olga", "op-secret-1", "accepted SEC-olga"),
                ):
                    login = {"username": user, "password": password}
                    context = await browser.new_context(ignore_https_errors=True, http_credentials=login)
                    page = await context.new_page()
                    await page.goto(http.address + "/")
                    await page.wait_for_selector("body[data-ready=yes]", timeout=10_000)
                    assert await page.locator(".station").count() == 8  # any user may look
                    await page.fill("#order-id", f"SEC-{user}")
                    await page.click("#submit")
                    shown = "#refusal" if user == "vic" else "#accepted"
                    word = verdict.split(":")[0]
                    await page.wait_for_selector(f"{shown}:has-text('{word}')", timeout=10_000)
                    assert verdict in await page.inner_text(shown)
            finally:
                await browser.close()
        assert bridge.get("SEC-vic") is None
        assert bridge.get("SEC-olga") is not None
        records = bridge.journal.load_audit(50)  # at, event, user, thumbprint, outcome, channel
    seen = {(event, user, outcome.split(" ")[0]) for _, event, user, _, outcome, _ in records}
    assert ("login", "olga", "ok") in seen
    assert ("login", "vic", "refused:") in seen
    assert ("denied", "vic", "POST") in seen
    assert ("order_submit", "olga", "ok") in seen
    channels = {channel for _, _, user, _, _, channel in records if user in ("olga", "vic")}
    assert channels
    assert all(channel.startswith("https 127.0.0.1:") for channel in channels)


async def test_the_view_is_an_hmi_at_desk_and_phone_sizes(ac_mapping, tmp_path):
    """At 1440×900 and 390×844 (screenshots kept in $LINEBRIDGE_SCREENSHOTS, else the test's folder):
    values carry their units; every station and the order form, with a priority, are in view
    without scrolling; a
    busy station is grey like an idle one (told by text and shape) and keeps its box size, an
    offline one is coloured; a phone scrolls no page sideways; values of a PLC that stopped
    answering are marked stale with their age instead of shown as live."""
    async with browsed_line(ac_mapping, tmp_path, backoff_max_s=0.2) as (line, bridge, http, browser, shots):
        desk = await browser.new_page(viewport={"width": 1440, "height": 900})
        await desk.goto(http.address + "/")
        force = '.station[data-station="chassis"] [data-tag="press_force_kn"]'
        await desk.wait_for_selector(force + " .unit", timeout=10_000)
        assert (await desk.inner_text(force + " .unit")).strip() == "kN"
        assert await desk.locator(force).get_attribute("data-quality") == "good"
        submit = await desk.locator("#submit").bounding_box()
        assert submit is not None
        assert submit["y"] + submit["height"] <= 900  # the form without scrolling
        in_view = """() => {
            const line = document.getElementById("line"), box = line.getBoundingClientRect();
            const inside = s => s.getBoundingClientRect().left >= box.left
                && s.getBoundingClientRect().right <= box.right;
            const stations = [...line.querySelectorAll(".station")];
            return line.scrollWidth <= line.clientWidth && stations.every(inside);
        }"""
        assert await desk.evaluate(in_view)  # every station, pack too, without scrolling the line
        chassis = '.station[data-station="chassis"]'
        height = await laid_out_height(desk, chassis)
        border = "e => getComputedStyle(e).borderTopColor"
        await line["chassis"].set_fault("stall", 1)  # the order stays at chassis, busy
        await desk.fill("#order-id", "HMI-1")
        await desk.fill("#priority", "3")
        await desk.click("#submit")
        await desk.wait_for_selector(chassis + '[data-state="busy"]', timeout=10_000)
        assert bridge.get("HMI-1").priority == 3
        assert "▶ busy" in (await desk.inner_text(chassis + " .state")).lower()  # text and shape
        # one story per station: the box and the PLC's own state and cycle counter agree
        agree = """box => {
            const tag = name => box.querySelector('[data-tag="' + name + '"]').textContent;
            return tag("state").includes("busy") && box.querySelector(".cycles").textContent
                .split(" ")[0] === tag("cycle_count").split(" ")[1];
        }"""
        await desk.wait_for_function(f"() => ({agree})(document.querySelector('{chassis}'))", timeout=5_000)
        await desk.wait_for_function(  # a stable box: the same height busy as idle
            "([sel, h]) => document.querySelector(sel).getBoundingClientRect().height === h",
            arg=[chassis, height], timeout=5_000,
        )  # fmt: skip
        idle_border = await desk.eval_on_selector('.station[data-station="coil"]', border)
        assert await desk.eval_on_selector(chassis, border) == idle_border  # busy is normal: grey
        await desk.screenshot(path=str(shots / "line-view-1440x900.png"), full_page=True)
        await line["chassis"].set_fault("stall", 0)

        phone = await browser.new_page(viewport={"width": 390, "height": 844})
        await phone.goto(http.address + "/")
        await phone.wait_for_selector(force + " .unit", timeout=10_000)
        wide = "document.documentElement.scrollWidth - window.innerWidth"
        overflow = await phone.evaluate(wide)
        assert overflow <= 0, f"the page scrolls {overflow} px sideways at 390 px"
        await phone.screenshot(path=str(shots / "line-view-390x844.png"), full_page=True)

        await line["pack"].stop()  # its PLC goes silent
        stock = '.station[data-station="pack"] [data-tag="label_stock"]'
        await desk.wait_for_selector(stock + '[data-quality="stale"]', timeout=15_000)
        text = await desk.inner_text(stock)
        assert "labels" in text
        assert "stale, " in text
        assert await desk.locator(force).get_attribute("data-quality") == "good"  # others live
        pack = '.station[data-station="pack"]'
        await desk.wait_for_selector(pack + '[data-state="offline"]', timeout=15_000)
        assert await desk.eval_on_selector(pack, border) != idle_border  # abnormal: coloured
        assert "✕ offline" in (await desk.inner_text(pack + " .state")).lower()
        await desk.screenshot(path=str(shots / "line-view-pack-silent.png"), full_page=True)


async def test_the_form_says_why_new_orders_are_refused_before_anyone_submits(ac_mapping, tmp_path):
    """A line holding as many open orders as it takes: the order form says so, naming the limit,
    before an operator types an order; once an order ends, the notice goes."""
    settings = {"open_orders": OpenOrderLimits(per_line=1)}
    async with browsed_line(ac_mapping, tmp_path, **settings) as (line, bridge, http, browser, shots):
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        await page.goto(http.address + "/")
        await page.wait_for_function("() => document.body.dataset.ready === 'yes'", timeout=10_000)
        assert await page.inner_text("#refusing") == ""
        await line["chassis"].set_fault("stall", 1)  # the order stays open
        await bridge.submit("ONE-1", "AC-W", {})
        said = "() => document.getElementById('refusing').textContent.includes('--max-open-orders')"
        await page.wait_for_function(said, timeout=10_000)
        notice = await page.inner_text("#refusing")
        assert notice.startswith("✕ new orders are refused: the line holds 1 open orders, as many as")
        await page.screenshot(path=str(shots / "line-view-refusing.png"), full_page=True)
        await bridge.cancel("ONE-1")
        gone = "() => document.getElementById('refusing').textContent === ''"
        await page.wait_for_function(gone, timeout=10_000)


async def test_the_alarm_banner_shows_and_takes_an_acknowledge(ac_mapping, tmp_path):
    """A furnace running hot: the banner shows its alarm (priority by shape and word, the message
    with the unit) at desk and phone sizes without sideways scrolling, the coil box says so; an
    operator acknowledges with a comment and confirms from the banner; back to normal, it leaves."""
    async with browsed_line(ac_mapping, tmp_path) as (_line, bridge, http, browser, shots):
        desk = await browser.new_page(viewport={"width": 1440, "height": 900})
        await desk.goto(http.address + "/")
        await desk.wait_for_selector("body[data-ready=yes]", timeout=10_000)
        assert await desk.locator(".alarm").count() == 0  # a healthy line: no banner
        await bridge.write_setpoint("coil", "furnace_setpoint_c", 650)
        row = '.alarm[data-alarm="coil.furnace_temp_c"]'
        await desk.wait_for_selector(row, timeout=10_000)
        text = await desk.inner_text(row)
        assert "▲ HIGH 700" in text
        assert "above its high limit 630 °C" in text
        assert "unacknowledged" in text
        assert (await box(desk, row))["y"] < 200  # on top, not below the fold
        coil = '.station[data-station="coil"] .alarmed'
        assert "furnace_temp_c" in await desk.inner_text(coil)
        await desk.screenshot(path=str(shots / "line-view-alarm-1440x900.png"), full_page=True)

        phone = await browser.new_page(viewport={"width": 390, "height": 844})
        await phone.goto(http.address + "/")
        await phone.wait_for_selector(row, timeout=10_000)
        overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls {overflow} px sideways at 390 px"
        await phone.screenshot(path=str(shots / "line-view-alarm-390x844.png"), full_page=True)

        await desk.fill(row + " input.comment", "burner checked")
        await desk.click(row + ' button[data-action="ack"]')
        await desk.wait_for_selector(
            row + ':has-text("acknowledged by line view: burner checked")', timeout=10_000
        )
        assert bridge.alarms.get("coil.furnace_temp_c").acked
        await desk.click(row + ' button[data-action="confirm"]')
        await desk.wait_for_selector(row + ':has-text("confirmed by")', timeout=10_000)
        # shelved by an operator: out of the banner, named on the line below it until unshelved
        assert await desk.locator("#out-of-service").inner_text() == ""
        bridge.alarms.shelve("coil.furnace_temp_c", "alice", 3600)
        await desk.wait_for_selector(row, state="detached", timeout=10_000)
        shelved = '#out-of-service [data-alarm="coil.furnace_temp_c"]'
        await desk.wait_for_selector(shelved, timeout=10_000)
        assert "shelved until" in await desk.inner_text(shelved)
        assert "by alice (active)" in await desk.inner_text(shelved)
        bridge.alarms.disable("pack.offline", "bob")
        disabled = '#out-of-service [data-alarm="pack.offline"]:has-text("disabled by bob")'
        await desk.wait_for_selector(disabled, timeout=10_000)
        await desk.screenshot(path=str(shots / "line-view-out-of-service.png"), full_page=True)
        await desk.click('#out-of-service [data-alarm="pack.offline"] button[data-action="enable"]')
        await desk.click(shelved + ' button[data-action="unshelve"]')
        await desk.wait_for_selector(row, timeout=10_000)  # back in the banner, still active
        await desk.wait_for_selector(shelved, state="detached", timeout=10_000)
        await desk.wait_for_selector("#out-of-service:empty", state="attached", timeout=10_000)
        assert bridge.alarms.get("pack.offline").enabled
        assert bridge.alarms.get("coil.furnace_temp_c").user == "line view"  # who put it back
        await bridge.write_setpoint("coil", "furnace_setpoint_c", 605)  # back to normal
        await desk.wait_for_selector(row, state="detached", timeout=10_000)
        assert (await desk.inner_text(coil)).strip() == ""
        history = bridge.journal.load_alarms("coil.furnace_temp_c")
    assert [(r["what"], r["user"], r["comment"]) for r in history][:3] == [
        ("activated", "", ""),
        ("acknowledged", "line view", "burner checked"),
        ("confirmed", "line view", ""),
    ]


async def test_a_trend_has_a_time_axis_and_the_mappings_scale(ac_mapping, tmp_path):
    """Clicking a value opens its trend: the last minutes on a time axis ("-N min" … "now"), on
    the mapping's range (furnace: -50 to 1200 °C), not the noise's."""
    async with browsed_line(ac_mapping, tmp_path) as (_line, _bridge, http, browser, shots):
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        await page.goto(http.address + "/")
        furnace = '.station[data-station="coil"] [data-tag="furnace_temp_c"]'
        await page.wait_for_selector(furnace + " .trend", timeout=10_000)
        await page.click(furnace)
        await page.wait_for_function(
            "() => +(document.querySelector('#trend-chart').dataset.points || 0) >= 5", timeout=10_000
        )
        labels = await page.eval_on_selector_all("#trend-chart .y-label", "es => es.map(e => e.textContent)")
        assert labels[0] == "-50 °C"
        assert labels[-1] == "1200 °C"
        times = await page.eval_on_selector_all("#trend-chart .x-label", "es => es.map(e => e.textContent)")
        assert (times[0], times[-1]) == ("now", "-10 min")
        assert "furnace_temp_c · now 6" in await page.inner_text("#trend-title")  # ~605 °C
        await page.select_option("#trend-minutes", "60")
        labelled = "[...document.querySelectorAll('#trend-chart .x-label')].map(e => e.textContent)"
        hour = f"() => {labelled}.includes('-60 min')"
        await page.wait_for_function(hour, timeout=5_000)
        await page.screenshot(path=str(shots / "line-view-trend.png"), full_page=True)


async def test_trends_come_from_the_history_store_when_the_opcua_face_keeps_one(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        http = HttpFace(rig.bridge, HttpSettings(port=0))
        http.view.trend_source = rig.face.trend  # as `linebridge run` wires them
        await http.start()
        try:
            url = http.address + "/api/trends/coil/furnace_temp_c?minutes=5"
            async with asyncio.timeout(15):
                # the store writes in batches of 1 s: ask again until the first is in (bounded)
                while not (trend := await asyncio.to_thread(get_json, url))["points"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            assert (trend["source"], trend["unit"]) == ("history", "°C")
            assert (trend["min"], trend["max"]) == (-50, 1200)
            assert all(590 < value < 620 for _, value in trend["points"])
            assert trend["from"] <= trend["points"][0][0] <= trend["points"][-1][0] <= trend["to"]
            bad = http.address + "/api/trends/coil/furnace_temp_c?minutes=600"
            assert (await asyncio.to_thread(get_status, bad)) == 400
            assert (await asyncio.to_thread(get_status, http.address + "/api/trends/coil/nope")) == 404
            # the banner's answers refuse what is not theirs to take, each with its reason
            ack = http.address + "/api/alarms/coil.furnace_temp_c/ack"
            assert await asyncio.to_thread(post_json, ack, {"comment": 5}) == (
                400,
                "comment: text expected, got int",
            )
            assert (await asyncio.to_thread(post_json, http.address + "/api/alarms/coil.nope/ack", {}))[
                0
            ] == 404
            assert await asyncio.to_thread(post_json, ack, {}) == (
                409,
                "coil.furnace_temp_c: already acknowledged",
            )
            unshelve = http.address + "/api/alarms/coil.furnace_temp_c/unshelve"
            status, reason = await asyncio.to_thread(post_json, unshelve, {})
            assert (status, "not shelved" in reason) == (409, True), reason
            shelve = http.address + "/api/alarms/coil.furnace_temp_c/shelve"
            assert await asyncio.to_thread(post_json, shelve, {}) == (
                404, "no alarm action 'shelve' (ack, confirm, unshelve, enable)"
            )  # fmt: skip
        finally:
            await http.stop()
