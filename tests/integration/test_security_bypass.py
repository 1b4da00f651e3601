"""--security as an attacker tries it: channels the endpoints do not offer, passwords in clear,
an empty trust list, refused actions in the audit, password guessing."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.server.uaprocessor import UaProcessor

from bridge.errors import ConfigurationError
from bridge.security import users as users_module
from bridge.security.pki import Pki
from tests.integration.secure_rig import secure_client, secured_rig

pytestmark = pytest.mark.slow


class EndpointBlindClient(Client):
    """A client that skips the endpoint check: it opens whatever channel it was told to and
    takes the first secured endpoint's user token policies as if they applied to that channel."""

    @staticmethod
    def find_endpoint(endpoints, security_mode, policy_uri):
        return next(ep for ep in endpoints if ep.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt)


class PlainPasswordClient(Client):
    """A client that sends its password unencrypted whatever the endpoint asks for."""

    def server_policy(self, token_type):
        policy = super().server_policy(token_type)
        if token_type == ua.UserTokenType.UserName:
            policy.SecurityPolicyUri = ""
        return policy


def audit(rig):
    return rig.bridge.journal.load_audit()


async def test_a_forced_none_channel_gets_discovery_only(ac_mapping, tmp_path):
    async with secured_rig(ac_mapping, tmp_path) as (rig, _, _):
        client = EndpointBlindClient(rig.url, timeout=5)
        client.set_user("otto")
        client.set_password("otto-pw")
        with pytest.raises((ua.UaError, ConnectionError, TimeoutError)):
            await client.connect()
        client.disconnect_socket()
        assert rig.bridge.get("SNEAK-1") is None
        records = audit(rig)
        assert not any(r[1] == "login" for r in records), records  # the password never got checked
        refusals = [r for r in records if r[1] == "channel"]
        assert refusals
        assert "None with mode None serves discovery only" in refusals[0][4]
        # Discovery over None still works: that is what `linebridge health` and clients need.
        probe = Client(rig.url, timeout=5)
        endpoints = await probe.connect_and_get_server_endpoints()
        assert endpoints
        assert all(e.SecurityMode != ua.MessageSecurityMode.None_ for e in endpoints)


async def test_a_password_in_clear_on_a_sign_only_channel_is_refused(ac_mapping, tmp_path):
    async with secured_rig(ac_mapping, tmp_path) as (rig, cert, _):
        key, der, uri = cert
        client = PlainPasswordClient(rig.url, timeout=5)
        client.application_uri = uri
        await client.set_security(
            SecurityPolicyBasic256Sha256, str(der), str(key), mode=ua.MessageSecurityMode.Sign
        )
        client.set_user("olga")
        client.set_password("olga-pw")
        with pytest.raises(ua.UaStatusCodeError, match="BadIdentityTokenInvalid"):
            await client.connect()
        client.disconnect_socket()
        outcomes = [r[4] for r in audit(rig) if r[1] == "login"]
        assert outcomes == ["refused: password sent in clear on a Sign channel"]
        async with secure_client(rig.url, cert, "olga", "olga-pw"):  # encrypted, the same user is welcome
            pass


async def test_the_trust_flow_works_on_an_empty_pki_folder(ac_mapping, tmp_path):
    async with secured_rig(ac_mapping, tmp_path, trust=False) as (rig, cert, _):
        with pytest.raises(ua.UaStatusCodeError, match="BadCertificateUntrusted"):
            async with secure_client(rig.url, cert, "olga", "olga-pw"):
                pass
        pki = Pki(tmp_path / "pki")
        (rejected,) = pki.certificates(pki.rejected)
        assert any(r[1] == "certificate" and r[4] == "refused: BadCertificateUntrusted" for r in audit(rig))
        pki.move(rejected[0][:8], pki.rejected, pki.trusted)  # `linebridge pki trust`
        async with secure_client(rig.url, cert, "olga", "olga-pw"):
            pass


async def test_refused_actions_are_audited_with_who_and_which_channel(ac_mapping, tmp_path):
    async with secured_rig(ac_mapping, tmp_path) as (rig, cert, _):
        async with secure_client(rig.url, cert, "otto", "otto-pw") as client:
            ns = await client.get_namespace_index("urn:linebridge:ac_line")
            line = client.get_node(ua.NodeId("Plant.Lines.ac_line", ns))
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                await line.call_method(f"{ns}:SubmitOrder", "x" * 1_000_000, "AC-W", "{}")
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                await line.call_method(f"{ns}:ReloadMapping")
            furnace = client.get_node(
                ua.NodeId("Plant.Lines.ac_line.Stations.coil.Setpoints.furnace_setpoint_c", ns)
            )
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                await furnace.write_value(620.0)
        with pytest.raises(ua.UaStatusCodeError, match=r"BadIdentityTokenRejected"):
            async with secure_client(rig.url, cert, None, None):
                pass
        denied = [r for r in audit(rig) if r[1] == "denied"]
        assert [r[4] for r in denied] == [
            "refused: Call SubmitOrder (role observer)",
            "refused: Call ReloadMapping (role observer)",
            "refused: Write (role observer)",
        ]
        assert all(
            r[2] == "otto" and r[5].startswith("Basic256Sha256/SignAndEncrypt 127.0.0.1:") for r in denied
        )
        assert any(r[1] == "login" and "anonymous access is off" in r[4] for r in audit(rig))
        size = rig.bridge.journal.path.stat().st_size
        assert size < 2_000_000, size  # the 1 MB order id was not stored


async def test_password_guessing_backs_off_and_hashes_off_the_event_loop(ac_mapping, tmp_path, monkeypatch):
    hashed_on: list[int] = []
    verify = users_module.verify_password

    def recording_verify(password: str, encoded: str) -> bool:
        hashed_on.append(threading.get_ident())
        return verify(password, encoded)

    monkeypatch.setattr(users_module, "verify_password", recording_verify)
    async with secured_rig(ac_mapping, tmp_path, login_free_failures=2, login_backoff_s=0.5) as (
        rig,
        cert,
        _,
    ):
        for _ in range(2):
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                async with secure_client(rig.url, cert, "olga", "guess"):
                    pass
        assert hashed_on
        assert threading.get_ident() not in hashed_on
        checks = len(hashed_on)
        # The third failure opens the back-off: the right password is now refused unchecked.
        with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
            async with secure_client(rig.url, cert, "olga", "guess"):
                pass
        with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
            async with secure_client(rig.url, cert, "olga", "olga-pw"):
                pass
        assert len(hashed_on) == checks + 1
        assert any("failed logins as 'olga' from 127.0.0.1" in r[4] for r in audit(rig) if r[1] == "login")
        # someone else at the same address (a shared HMI PC, NAT) is not locked out by that guessing
        async with secure_client(rig.url, cert, "erik", "erik-pw"):
            pass
        async with asyncio.timeout(10):
            while True:  # after the back-off the right password gets in again
                try:
                    async with secure_client(rig.url, cert, "olga", "olga-pw"):
                        break
                except ua.UaStatusCodeError:
                    await asyncio.sleep(0.1)


async def test_a_renamed_asyncua_hook_stops_a_secured_start(ac_mapping, tmp_path, monkeypatch):
    """The channel guard fails closed: an asyncua that no longer has what it hooks (as after an
    upgrade that renamed it) must not serve a `--security` endpoint unguarded."""
    monkeypatch.delattr(UaProcessor, "_process_message")
    with pytest.raises(ConfigurationError, match=r"UaProcessor\._process_message.*refusing to start"):
        async with secured_rig(ac_mapping, tmp_path):
            pass
