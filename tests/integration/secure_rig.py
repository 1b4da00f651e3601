"""A bridge with --security over the simulated line, and clients with certificates and users."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

from bridge.mapping import LineMapping
from bridge.opcua.endpoint_security import SecuritySettings
from bridge.security.pki import Pki
from bridge.security.users import add_user
from tests.integration.opcua_rig import opcua_rig


async def client_certificate(folder: Path, name: str) -> tuple[Path, Path, str]:
    uri = f"urn:linebridge-tests:{name}"
    key, cert = folder / f"{name}.pem", folder / f"{name}.der"
    await setup_self_signed_certificate(
        key, cert, uri, "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": name}
    )
    return key, cert, uri


@asynccontextmanager
async def secure_client(
    url: str,
    cert: tuple[Path, Path, str],
    user: str | None,
    password: str | None,
    *,
    user_cert: tuple[Path, Path] | None = None,
):
    key, der, uri = cert
    client = Client(url, timeout=10)
    client.application_uri = uri
    await client.set_security(
        SecurityPolicyBasic256Sha256, str(der), str(key), mode=ua.MessageSecurityMode.SignAndEncrypt
    )
    if user_cert is not None:  # an X.509 user identity token, besides the channel's certificate
        await client.load_client_certificate(str(user_cert[0]))
        await client.load_private_key(user_cert[1])
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


@asynccontextmanager
async def secured_rig(mapping: LineMapping, tmp_path: Path, *, trust: bool = True, **security: Any):
    """Users olga (operator), otto (observer), erik (engineer), each with password <name>-pw; a
    client certificate "trusted-client", trusted unless `trust` is false."""
    users = tmp_path / "users.yaml"
    add_user(users, "olga", "operator", "olga-pw")
    add_user(users, "otto", "observer", "otto-pw")
    add_user(users, "erik", "engineer", "erik-pw")
    settings = SecuritySettings(pki_dir=tmp_path / "pki", users_file=users, **security)
    async with opcua_rig(mapping, tmp_path / "data", anonymous=False, security=settings) as rig:
        trusted = await client_certificate(tmp_path, "trusted-client")
        if trust:
            Pki(tmp_path / "pki").trusted.joinpath("trusted-client.der").write_bytes(trusted[1].read_bytes())
        yield rig, trusted, tmp_path


