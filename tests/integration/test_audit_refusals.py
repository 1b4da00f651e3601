"""A client looping on a refused call fills no disk: its first refusals in a minute are audited
(and logged) a row each, the rest as one row with their count and the last reason
(docs/security.md, "Audit trail"); every call is still answered with its own reason, and what is
accepted is audited one row each."""

from __future__ import annotations

import asyncio

from asyncua import ua
from structlog.testing import capture_logs

from bridge.http.server import HttpFace, HttpSettings
from tests.integration.http_calls import post_json
from tests.integration.opcua_rig import opcua_rig

s = ua.Variant


async def test_three_hundred_refused_submits_are_eleven_audit_rows(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        http = HttpFace(rig.bridge, HttpSettings(port=0))
        await http.start()
        try:
            answers = []
            with capture_logs() as logs:
                for batch in range(15):
                    ids = [f"X-{batch}-{i}" for i in range(20)]
                    bad = (rig.call("SubmitOrder", s(i), s("NOPE"), s("{}")) for i in ids)
                    answers += await asyncio.gather(*bad)
            refusals_logged = [e for e in logs if e["event"] == "order_refused"]
            assert len(refusals_logged) == 10  # the log follows the audit: no line per call in a flood
            assert len(answers) == 300
            assert not any(a.StatusCode.is_good() for a in answers)
            assert all("NOPE" in a.InputArgumentDiagnosticInfos[1].AdditionalInfo for a in answers)
            assert (await rig.call("SubmitOrder", s("G-1"), s("AC-W"), s("{}"))).StatusCode.is_good()
            order = {"order_id": "W-1", "product": "NOPE", "options": {}}
            status, _reason = await asyncio.to_thread(post_json, http.address + "/api/orders", order)
            assert status == 400
        finally:
            await http.stop()
        rig.bridge.refusals.flush()  # as stop() does
        rows = [r for r in rig.bridge.journal.load_audit(1000) if r[1] == "order_submit"]
    opcua = [r[4] for r in rows if not r[5].startswith("http") and r[4].startswith("refused")]
    counted = [outcome for outcome in opcua if outcome.startswith("refused ×")]
    told = [outcome for outcome in opcua if outcome not in counted]
    assert len(told) == 10, told  # the first ten as they came
    assert all(outcome.startswith("refused X-0-") for outcome in told), told
    assert len(counted) == 1, counted  # the other 290 in one row
    assert counted[0].startswith("refused ×290 more in ")
    assert "; the last: refused X-14-" in counted[0]
    assert [r[4] for r in rows if r[4].startswith("ok")] == ["ok G-1"]
    (accepted,) = [r[5] for r in rows if r[4] == "ok G-1"]
    assert accepted.startswith("None/None 127.0.0.1:")  # no --security, but the client's address
    assert [r[5].split()[0] for r in rows if r[4].startswith("refused W-1")] == ["http"]  # its own client
