"""The server's PKI folder, in the usual OPC UA layout, and the client certificate check.

    <pki>/own/certs/server.der       the server's application instance certificate (created on first start)
    <pki>/own/private/server.pem     its private key
    <pki>/trusted/certs/, trusted/crl/   client certificates (and CAs) trusted, and their CRLs
    <pki>/issuers/certs/, issuers/crl/   CAs that may issue trusted certificates, and their CRLs
    <pki>/rejected/certs/            certificates refused so far; move one to trusted/certs to trust it

The trust folders are read again on every check, so trusting a client needs no restart.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = structlog.get_logger(__name__)


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 thumbprint, as UaExpert and the OPC UA specification show it."""
    return cert.fingerprint(hashes.SHA1()).hex()


@dataclass(frozen=True)
class Pki:
    root: Path

    @property
    def own_cert(self) -> Path:
        return self.root / "own" / "certs" / "server.der"

    @property
    def own_key(self) -> Path:
        return self.root / "own" / "private" / "server.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted" / "certs"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected" / "certs"

    def folders(self) -> list[Path]:
        return [
            self.own_cert.parent,
            self.own_key.parent,
            self.trusted,
            self.root / "trusted" / "crl",
            self.root / "issuers" / "certs",
            self.root / "issuers" / "crl",
            self.rejected,
        ]

    def create(self) -> None:
        for folder in self.folders():
            folder.mkdir(parents=True, exist_ok=True)
        self.own_key.parent.chmod(0o700)

    async def ensure_server_certificate(self, application_uri: str, hostname: str | None = None) -> None:
        """Create the server's key and self-signed certificate if missing or no longer valid."""
        self.create()
        await setup_self_signed_certificate(
            self.own_key,
            self.own_cert,
            application_uri,
            hostname or socket.gethostname(),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {
                "commonName": f"linebridge@{hostname or socket.gethostname()}",
                "organizationName": "linebridge",
            },
        )
        self.own_key.chmod(0o600)

    async def create_client_certificate(self, name: str, hostname: str | None = None) -> tuple[Path, Path]:
        """A client certificate and key for the shell client (or a script) on this host, trusted at
        once: whoever may write this folder may trust a client anyway. Returns (certificate, key)."""
        self.create()
        folder = self.root / "clients"
        folder.mkdir(mode=0o700, exist_ok=True)
        cert, key = folder / f"{name}.der", folder / f"{name}.pem"
        host = hostname or socket.gethostname()
        await setup_self_signed_certificate(
            key, cert, f"urn:linebridge:client:{name}", host, [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": f"{name}@{host}", "organizationName": "linebridge"},
        )  # fmt: skip
        key.chmod(0o600)
        shutil.copy(cert, self.trusted / cert.name)
        return cert, key

    def certificates(self, folder: Path) -> list[tuple[str, str, Path]]:
        """(thumbprint, subject common name, file) of every certificate in `folder`."""
        found = []
        for path in sorted(folder.glob("*")):
            if path.suffix.lower() not in (".der", ".pem", ".crt"):
                continue
            data = path.read_bytes()
            cert = (
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            found.append((thumbprint(cert), str(names[0].value) if names else "", path))
        return found

    def move(self, prefix: str, source: Path, target: Path) -> Path:
        """Move the certificate whose thumbprint starts with `prefix` from `source` to `target`."""
        matches = [path for tp, _, path in self.certificates(source) if tp.startswith(prefix.lower())]
        if len(matches) != 1:
            raise LookupError(f"{len(matches)} certificates in {source} match {prefix!r}")
        target.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(str(matches[0]), target / matches[0].name))

    def reject(self, cert: x509.Certificate) -> Path:
        self.rejected.mkdir(parents=True, exist_ok=True)
        path = self.rejected / f"{thumbprint(cert)}.der"
        path.write_bytes(cert.public_bytes(Encoding.DER))
        return path


AuditHook = Callable[[str, str, str, str], None]  # event, user, thumbprint, outcome


class PkiValidator:
    """Checks a client's application instance certificate against the PKI folder; an untrusted one
    is copied to rejected/ (and audited) so an engineer can trust it by moving the file."""

    OPTIONS = (
        CertificateValidatorOptions.TIME_RANGE
        | CertificateValidatorOptions.URI
        | CertificateValidatorOptions.TRUSTED
        | CertificateValidatorOptions.REVOKED
        | CertificateValidatorOptions.PEER_CLIENT
    )

    def __init__(self, pki: Pki, audit: AuditHook | None = None) -> None:
        self.pki = pki
        self.audit = audit

    async def __call__(self, cert: x509.Certificate, app_description: ua.ApplicationDescription) -> None:
        trusted = [self.pki.trusted, self.pki.root / "issuers" / "certs"]
        store = TrustStore(trusted, [self.pki.root / "trusted" / "crl", self.pki.root / "issuers" / "crl"])
        tp = thumbprint(cert)
        try:
            if not any(self.pki.certificates(folder) for folder in trusted if folder.is_dir()):
                # Nothing trusted yet (a fresh folder): asyncua cannot build an empty store.
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
            await store.load()
            await CertificateValidator(self.OPTIONS, store).validate(cert, app_description)
        except ServiceError as exc:
            if exc.code == ua.StatusCodes.BadCertificateUntrusted:
                path = self.pki.reject(cert)
                log.warning(
                    "client_certificate_rejected",
                    thumbprint=tp,
                    application=app_description.ApplicationUri,
                    file=str(path),
                )
            if self.audit is not None:
                refused = f"refused: {ua.StatusCode(exc.code).name}"
                self.audit("certificate", app_description.ApplicationUri or "", tp, refused)
            raise
        if self.audit is not None:
            self.audit("certificate", app_description.ApplicationUri or "", tp, "trusted")
