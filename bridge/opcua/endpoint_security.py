"""Which endpoints the OPC UA server offers, and with which certificates, users and roles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog
from asyncua import Server, ua

from bridge.errors import ConfigurationError
from bridge.opcua.channel_guard import ChannelGuard, LoginBackoff, tag_channels
from bridge.opcua.connections import ClientConnections
from bridge.security.pki import AuditHook, Pki, PkiValidator
from bridge.security.rules import RoleRuleset
from bridge.security.users import LocalDemoUserManager, RoleUserManager, der_thumbprint

log = structlog.get_logger(__name__)



@dataclass(frozen=True)
class SecuritySettings:
    pki_dir: Path
    users_file: Path
    allow_none_endpoint: bool = False  # also offer None (still no anonymous access)
    login_free_failures: int = 3  # failed logins from one address before attempts back off
    login_backoff_s: float = 0.5  # the first wait after those; doubles with each further failure
    login_backoff_max_s: float = 30.0


SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
]


def check_exposure(endpoint: str, security: SecuritySettings | None, allow_insecure_remote: bool) -> bool:
    """Whether the None endpoint is offered; ConfigurationError if it would be exposed beyond
    loopback without the explicit flag (with the flag, a warning)."""
    host = urlparse(endpoint).hostname or ""
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    offers_none = security is None or security.allow_none_endpoint
    if offers_none and not loopback:
        if not allow_insecure_remote:
            raise ConfigurationError(
                f"the None (no security) endpoint on non-loopback address {host!r} needs"
                " --allow-insecure-remote; or turn security on with --security"
            )
        log.warning("opcua_insecure_endpoint_exposed", host=host)
    return offers_none


async def secure_server(
    server: Server,
    app_uri: str,
    security: SecuritySettings | None,
    offers_none: bool,
    audit: AuditHook,
    connections: ClientConnections,
) -> None:
    if security is None:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.iserver.user_manager = LocalDemoUserManager()
        tag_channels(connections)  # no guard, but each request's client address is still known
        return
    pki = Pki(security.pki_dir)
    await pki.ensure_server_certificate(app_uri)
    await server.load_certificate(str(pki.own_cert))
    await server.load_private_key(str(pki.own_key))
    policies = SECURE_POLICIES + ([ua.SecurityPolicyType.NoSecurity] if offers_none else [])
    server.set_security_policy(policies, permission_ruleset=RoleRuleset(audit=audit))
    server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])  # no anonymous access
    users = RoleUserManager(security.users_file, audit=audit)
    server.iserver.user_manager = users
    backoff = LoginBackoff(
        free=security.login_free_failures,
        initial_s=security.login_backoff_s,
        max_s=security.login_backoff_max_s,
    )
    ChannelGuard(server, policies, users, audit, backoff).install(connections)
    server.set_certificate_validator(PkiValidator(pki, audit=audit))  # type: ignore[arg-type]
    log.info("opcua_security", pki=str(security.pki_dir), policies=[p.name for p in policies])


def audit_sessions(server: Server, audit: AuditHook) -> None:
    """Audit every client session's opening (once its CreateSession request, which carries the
    client certificate, is answered) and closing.

    asyncua has no session callbacks; its internal server registers and unregisters each client
    session, so this server instance's two methods (and each new session's create_session) are
    wrapped, not the classes.
    """
    iserver = server.iserver
    register, unregister = iserver.register_external_session, iserver.unregister_external_session

    def opened(session: Any) -> None:
        register(session)
        create = session.create_session

        async def created(params: ua.CreateSessionParameters, *args: Any, **kwargs: Any) -> Any:
            result = await create(params, *args, **kwargs)
            tp = der_thumbprint(params.ClientCertificate) if params.ClientCertificate else ""
            audit("session_open", "", tp, f"ok {session.name}")
            return result

        session.create_session = created

    def closed(session: Any) -> None:
        unregister(session)
        user = getattr(session.user, "name", None) or "anonymous"
        audit("session_close", user, getattr(session.user, "thumbprint", ""), f"ok {session.name}")

    iserver.register_external_session = opened  # type: ignore[method-assign]
    iserver.unregister_external_session = closed  # type: ignore[method-assign]
