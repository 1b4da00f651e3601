"""Users, roles and salted password hashes (scrypt), kept in a small YAML file.

    users:
      alice: {role: operator, password: "scrypt$16384$8$1$<salt hex>$<hash hex>"}
      hmi-7: {role: observer, certificate: <SHA-1 thumbprint of its X.509 user certificate>}

`linebridge user add NAME --role ROLE` writes a password user (never stored in clear),
`linebridge user add NAME --role ROLE --certificate FILE` a certificate user.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509

from bridge.errors import ConfigurationError
from bridge.security.pki import thumbprint

# Each role may do what the ones before it may, and more.
ROLES = ("observer", "operator", "engineer", "admin")
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed.hex(), digest)


def at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass
class RoleUser(User):
    """An asyncua user that also carries its linebridge role."""

    lb_role: str = "observer"
    thumbprint: str = ""  # of the client's certificate (the user's own, for an X.509 user)


def der_thumbprint(der: bytes) -> str:
    """Thumbprint of the (first) certificate of a DER chain, as a client sends it."""
    return thumbprint(uacrypto.x509_from_der(der))


def load_users(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    users = data.get("users", {}) if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise ConfigurationError(f"{path}: expected 'users:' mapping names to {{role, password}}")
    for name, entry in users.items():
        if (
            not isinstance(entry, dict)
            or entry.get("role") not in ROLES
            or not (isinstance(entry.get("password"), str) or isinstance(entry.get("certificate"), str))
        ):
            raise ConfigurationError(
                f"{path}: users.{name}: needs role ({', '.join(ROLES)}) and a password hash"
                " or a certificate thumbprint"
            )
    return users


def add_user(path: Path, name: str, role: str, password: str) -> None:
    if not password:
        raise ConfigurationError("the password must not be empty")
    _save_user(path, name, {"role": role, "password": hash_password(password)})


def add_certificate_user(path: Path, name: str, role: str, certificate: Path) -> str:
    """A user who logs in with an X.509 user certificate; returns the thumbprint recorded."""
    data = certificate.read_bytes()
    try:
        pem = data.lstrip().startswith(b"-----")
        cert = x509.load_pem_x509_certificate(data) if pem else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ConfigurationError(f"{certificate}: not a DER or PEM certificate: {exc}") from None
    tp = thumbprint(cert)
    _save_user(path, name, {"role": role, "certificate": tp})
    return tp


def _save_user(path: Path, name: str, entry: dict[str, str]) -> None:
    if entry["role"] not in ROLES:
        raise ConfigurationError(f"role must be one of {', '.join(ROLES)}")
    users = load_users(path)
    users[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"users": users}, sort_keys=True))
    path.chmod(0o600)


@dataclass(frozen=True)
class PasswordVerdict:
    """A password check done ahead of asyncua's (synchronous) user check, off the event loop."""

    username: str
    password: str
    ok: bool


# Set by the channel guard around an ActivateSession whose password it has checked already.
checked_login: contextvars.ContextVar[PasswordVerdict | None] = contextvars.ContextVar(
    "checked_login", default=None
)


class RoleUserManager:
    """asyncua user manager: password and certificate users from the users file; no anonymous
    access. The file is read on every login, so adding a user needs no restart."""

    def __init__(self, path: Path, audit: Any = None) -> None:
        self.path = path
        self.audit = audit

    def check_password(self, username: str, password: str) -> PasswordVerdict:
        """The slow part of a login (scrypt): meant for a worker thread."""
        entry = load_users(self.path).get(username)
        stored = entry.get("password") if entry is not None else None
        ok = bool(password) and isinstance(stored, str) and verify_password(password, stored)
        return PasswordVerdict(username, password, ok)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        """`certificate`: the user's X.509 certificate when it logs in with one (no user name), else
        the secure channel's client certificate (asyncua passes that along with a user name)."""
        tp = der_thumbprint(certificate) if certificate else ""
        users = load_users(self.path)
        if username is None:
            found = [(n, e) for n, e in users.items() if tp and e.get("certificate") == tp]
            if not found:
                self._audit("login", "", tp, "refused: anonymous, or a certificate no user has")
                return None
            username, entry = found[0]
        else:
            entry = users.get(username)
            verdict = checked_login.get()
            if verdict is None or (verdict.username, verdict.password) != (username, password):
                verdict = self.check_password(username, password or "")
            if entry is None or not verdict.ok:
                self._audit("login", username[:64], tp, "refused: wrong user name or password")
                return None
        role = entry["role"]
        self._audit("login", username, tp, f"ok ({role})")
        return RoleUser(
            role=UserRole.Admin if role == "admin" else UserRole.User,
            name=username,
            lb_role=role,
            thumbprint=tp,
        )

    def _audit(self, event: str, user: str, tp: str, outcome: str) -> None:
        if self.audit is not None:
            self.audit(event, user, tp, outcome)


class LocalDemoUserManager:
    """Without security (the local demo on loopback) every session is an anonymous engineer: it
    may submit and cancel orders and write setpoints, but not change the address space, which
    asyncua would otherwise allow its default anonymous administrator."""

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User:
        return RoleUser(role=UserRole.User, name="anonymous", lb_role="engineer")
