"""The security commands: users with hashed passwords, the PKI folder from the shell."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from bridge.cli import app
from bridge.security.pki import Pki, thumbprint
from bridge.security.users import verify_password

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("restore_logging")


def test_user_add_stores_a_salted_hash(tmp_path):
    users = tmp_path / "users.yaml"
    result = runner.invoke(
        app, ["user", "add", "olga", "--role", "operator", "--users", str(users), "--password", "s3cret"]
    )
    assert result.exit_code == 0, result.output
    entry = yaml.safe_load(users.read_text())["users"]["olga"]
    assert entry["role"] == "operator"
    assert "s3cret" not in users.read_text()
    assert verify_password("s3cret", entry["password"])
    assert not verify_password("S3cret", entry["password"])
    bad = runner.invoke(app, ["user", "add", "x", "--role", "boss", "--users", str(users), "--password", "p"])
    assert bad.exit_code == 2
    assert "role must be one of observer, operator, engineer, admin" in bad.output
    empty = runner.invoke(
        app, ["user", "add", "x", "--role", "operator", "--users", str(users), "--password", ""]
    )
    assert empty.exit_code == 2
    assert "the password must not be empty" in empty.output
    assert "x" not in yaml.safe_load(users.read_text())["users"]


def test_user_add_with_a_certificate_stores_its_thumbprint(tmp_path):
    users, key, cert = tmp_path / "users.yaml", tmp_path / "u.pem", tmp_path / "u.der"
    asyncio.run(
        setup_self_signed_certificate(
            key, cert, "urn:test:hmi", "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "hmi"}
        )
    )
    result = runner.invoke(
        app, ["user", "add", "hmi", "--role", "observer", "--users", str(users), "--certificate", str(cert)]
    )
    assert result.exit_code == 0, result.output
    expected = thumbprint(x509.load_der_x509_certificate(cert.read_bytes()))
    assert yaml.safe_load(users.read_text())["users"]["hmi"] == {"role": "observer", "certificate": expected}
    assert f"hmi (observer, certificate {expected})" in result.output
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"not a certificate")
    bad = runner.invoke(
        app, ["user", "add", "x", "--role", "observer", "--users", str(users), "--certificate", str(garbage)]
    )
    assert bad.exit_code == 2
    assert "not a DER or PEM certificate" in bad.output


def test_pki_trust_and_reject_move_certificates(tmp_path):
    pki = Pki(tmp_path / "pki")
    pki.create()
    key, cert = tmp_path / "c.pem", pki.rejected / "client.der"
    asyncio.run(
        setup_self_signed_certificate(
            key,
            cert,
            "urn:test:client",
            "localhost",
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": "client"},
        )
    )
    ((thumb, _, _),) = pki.certificates(pki.rejected)
    listed = runner.invoke(app, ["pki", "list", "--pki-dir", str(pki.root)])
    assert listed.output.startswith(f"rejected  {thumb}")
    assert runner.invoke(app, ["pki", "trust", thumb[:10], "--pki-dir", str(pki.root)]).exit_code == 0
    assert [c[0] for c in pki.certificates(pki.trusted)] == [thumb]
    assert runner.invoke(app, ["pki", "reject", thumb[:10], "--pki-dir", str(pki.root)]).exit_code == 0
    assert pki.certificates(pki.trusted) == []
    missing = runner.invoke(app, ["pki", "trust", "ffff", "--pki-dir", str(pki.root)])
    assert missing.exit_code == 1
    assert "0 certificates" in missing.output


def test_an_exposed_none_endpoint_needs_the_explicit_flag(tmp_path):
    result = runner.invoke(
        app,
        [
            "run",
            "--data-dir",
            str(tmp_path),
            "--telemetry-interval",
            "0",
            "--opcua-endpoint",
            "opc.tcp://0.0.0.0:48400/",
        ],
    )
    assert result.exit_code == 2
    assert "needs --allow-insecure-remote" in result.output


def test_shell_client_names_a_certificate_it_cannot_use(tmp_path):
    bad = tmp_path / "bad.der"
    bad.write_bytes(b"garbage")
    env = {"LINEBRIDGE_CERTIFICATE": str(bad), "LINEBRIDGE_PRIVATE_KEY": str(bad)}
    result = runner.invoke(app, ["order", "show", "X", "-e", "opc.tcp://127.0.0.1:1/"], env=env)
    assert result.exit_code == 1
    assert f"{bad}: not a DER application certificate with an application URI" in result.output
    no_key = runner.invoke(app, ["order", "show", "X"], env={"LINEBRIDGE_CERTIFICATE": str(bad)})
    assert no_key.exit_code == 1
    assert "LINEBRIDGE_CERTIFICATE needs LINEBRIDGE_PRIVATE_KEY" in no_key.output
