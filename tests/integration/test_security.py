"""Secured endpoints: certificates, users and roles, refusals, and the audit trail."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from asyncua import ua

from bridge.security.pki import Pki
from bridge.security.users import add_certificate_user, der_thumbprint
from tests.integration.conftest import NODE_DIR, holding_but_heartbeat
from tests.integration.secure_rig import client_certificate, secure_client, secured_rig

pytestmark = pytest.mark.slow


@pytest.fixture
async def secured(ac_mapping, tmp_path):
    async with secured_rig(ac_mapping, tmp_path) as found:
        yield found


def audit(rig) -> list[tuple[str, str, str, str, str]]:
    return rig.bridge.journal.load_audit()


async def test_operator_submits_over_basic256sha256_sign_and_encrypt(secured):
    rig, cert, _ = secured
    async with secure_client(rig.url, cert, "olga", "olga-pw") as client:
        ns = await client.get_namespace_index("urn:linebridge:ac_line")
        line = client.get_node(ua.NodeId("Plant.Lines.ac_line", ns))
        node = await line.call_method(f"{ns}:SubmitOrder", "SEC-1", "AC-W", '{"capacity_btu": 9000}')
        assert node == ua.NodeId("Plant.Lines.ac_line.Orders.SEC-1", ns)
    records = audit(rig)
    events = [r[1] for r in records]
    assert events.index("session_open") < events.index("login") < events.index("session_close")
    tp = der_thumbprint(cert[1].read_bytes())  # every record of the session names its certificate
    assert ("login", "olga", tp, "ok (operator)") in [r[1:5] for r in records]
    assert ("order_submit", "olga", tp, "ok SEC-1") in [r[1:5] for r in records]
    assert ("session_close", "olga", tp) in [r[1:4] for r in records]
    assert ("session_open", "", tp) in [r[1:4] for r in records]
    assert any(r[1] == "certificate" and r[3] == tp and r[4] == "trusted" for r in records)


async def test_untrusted_certificate_is_refused_and_lands_in_rejected(secured):
    rig, _, tmp_path = secured
    stranger = await client_certificate(tmp_path, "stranger")
    with pytest.raises(ua.UaError):
        async with secure_client(rig.url, stranger, "olga", "olga-pw"):
            pass
    rejected = Pki(tmp_path / "pki").certificates(Pki(tmp_path / "pki").rejected)
    assert len(rejected) == 1
    assert rejected[0][1].endswith("stranger")
    assert any(r[1] == "certificate" and r[4] == "refused: BadCertificateUntrusted" for r in audit(rig))


async def test_wrong_password_and_anonymous_are_refused_and_audited(secured):
    rig, cert, _ = secured
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        async with secure_client(rig.url, cert, "olga", "guess"):
            pass
    with pytest.raises(ua.UaStatusCodeError, match=r"BadIdentityTokenRejected|BadUserAccessDenied"):
        async with secure_client(rig.url, cert, None, None):
            pass
    tp = der_thumbprint(cert[1].read_bytes())
    assert ("login", "olga", tp, "refused: wrong user name or password") in [r[1:5] for r in audit(rig)]


FURNACE = "Plant.Lines.ac_line.Stations.coil.Setpoints.furnace_setpoint_c"


async def refused(what) -> None:
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        await what


async def plc_memory(rig) -> dict[str, list]:
    """Everything a client may change on each PLC: the command and parameter registers,
    setpoints and coils."""
    return {
        name: [await holding_but_heartbeat(plc, 330), await plc.memory.read("coil", 0, 16)]
        for name, plc in rig.line.plcs.items()
    }


async def test_each_role_is_refused_what_it_may_not_do(secured):
    rig, cert, _ = secured
    before = await plc_memory(rig)
    order_calls = {
        "SubmitOrder": ("R-1", "AC-W", "{}"),
        "SubmitOrder_AC-W": ("R-1", 1, 0),
        "CancelOrder": ("R-1",),
    }
    not_allowed = {
        "otto": {**order_calls, "ReloadMapping": ()},
        "olga": {"ReloadMapping": ()},
        "erik": {},
    }
    read_only = "Plant.Lines.ac_line.Stations.coil.CurrentOrder"
    for user, calls in not_allowed.items():
        async with secure_client(rig.url, cert, user, f"{user}-pw") as client:
            ns = await client.get_namespace_index("urn:linebridge:ac_line")
            line = client.get_node(ua.NodeId("Plant.Lines.ac_line", ns))
            furnace = client.get_node(ua.NodeId(FURNACE, ns))
            assert await furnace.read_value() == pytest.approx(605)
            writable = (await furnace.get_user_access_level()) & {ua.AccessLevel.CurrentWrite}
            assert bool(writable) is (user == "erik")  # what a client shows each user
            for method, args in calls.items():
                await refused(line.call_method(f"{ns}:{method}", *args))
            if user != "erik":
                await refused(client.get_node(ua.NodeId(FURNACE, ns)).write_value(620.0))
            await refused(client.get_node(ua.NodeId(read_only, ns)).write_value("x"))
            await refused(line.add_object(ua.NodeId("Plant.Lines.ac_line.Intruder", ns), f"{ns}:Intruder"))
            await refused(client.get_node(ua.NodeId(read_only, ns)).write_attribute(
                ua.AttributeIds.DisplayName, ua.DataValue(ua.Variant(ua.LocalizedText("x")))))  # fmt: skip
    assert await plc_memory(rig) == before
    assert all(not plc.executed for plc in rig.line.plcs.values())
    assert rig.bridge.get("R-1") is None
    async with secure_client(rig.url, cert, "erik", "erik-pw") as engineer:  # what an engineer may do
        ns = await engineer.get_namespace_index("urn:linebridge:ac_line")
        await engineer.get_node(ua.NodeId(FURNACE, ns)).write_value(620.0)
    coil = rig.line["coil"]
    assert await coil.memory.read_field(coil.fields["furnace_setpoint_c"]) == pytest.approx(620)
    tp = der_thumbprint(cert[1].read_bytes())
    assert ("setpoint_write", "erik", tp, "ok coil.furnace_setpoint_c=620.0") in [r[1:5] for r in audit(rig)]
    assert not any(r[1] == "mapping_reload" for r in audit(rig))  # the refused calls never got that far


async def test_x509_user_certificate_logs_in_with_its_role(secured):
    rig, channel, tmp_path = secured
    user_key, user_cert, _ = await client_certificate(tmp_path, "hmi-7")
    tp = add_certificate_user(tmp_path / "users.yaml", "hmi-7", "operator", user_cert)
    async with secure_client(rig.url, channel, None, None, user_cert=(user_cert, user_key)) as client:
        ns = await client.get_namespace_index("urn:linebridge:ac_line")
        line = client.get_node(ua.NodeId("Plant.Lines.ac_line", ns))
        await line.call_method(f"{ns}:SubmitOrder", "X509-1", "AC-W", "{}")
        await refused(client.get_node(ua.NodeId(FURNACE, ns)).write_value(620.0))
    records = [r[1:5] for r in audit(rig)]
    assert ("login", "hmi-7", tp, "ok (operator)") in records
    assert ("order_submit", "hmi-7", tp, "ok X509-1") in records
    stranger_key, stranger_cert, _ = await client_certificate(tmp_path, "stranger-user")
    with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
        async with secure_client(rig.url, channel, None, None, user_cert=(stranger_cert, stranger_key)):
            pass
    stranger = der_thumbprint(stranger_cert.read_bytes())
    assert ("login", "", stranger, "refused: anonymous, or a certificate no user has") in [
        r[1:5] for r in audit(rig)
    ]


async def run_node(*args: str) -> tuple[int, dict]:
    node = shutil.which("node")
    script = NODE_DIR / "secure_submit.mjs"
    process = await asyncio.create_subprocess_exec(
        node, str(script), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, err.decode()[-2000:]
    return process.returncode or 0, json.loads(lines[-1])


@pytest.mark.interop
async def test_node_opcua_is_refused_until_its_certificate_is_trusted(secured, node_client):
    rig, _, tmp_path = secured
    client_pki = str(tmp_path / "node-pki")
    code, answer = await run_node(rig.url, client_pki, "olga", "olga-pw", "NODE-SEC")
    assert code == 2, answer
    pki = Pki(tmp_path / "pki")
    (rejected,) = pki.certificates(pki.rejected)
    pki.move(rejected[0][:8], pki.rejected, pki.trusted)  # what `linebridge pki trust` does
    code, answer = await run_node(rig.url, client_pki, "olga", "olga-pw", "NODE-SEC")
    assert code == 0, answer
    assert answer["status"] == "Good"
    assert answer["output"].endswith("s=Plant.Lines.ac_line.Orders.NODE-SEC")
    assert rig.bridge.get("NODE-SEC") is not None
    assert "BadUserAccessDenied" in answer["write"]  # an operator may not change setpoints
    coil = rig.line["coil"]
    assert await coil.memory.read_field(coil.fields["furnace_setpoint_c"]) == pytest.approx(605)
    code, answer = await run_node(rig.url, client_pki, "erik", "erik-pw", "NODE-ENG")
    assert (code, answer["status"], answer["write"]) == (0, "Good", "Good"), answer
    assert await coil.memory.read_field(coil.fields["furnace_setpoint_c"]) == pytest.approx(615)
