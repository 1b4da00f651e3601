"""Users, roles and salted password hashes (scrypt), kept in a small YAML file.

    users:
      alice: {role: operator, password: "scrypt$16384$8$1$<salt hex>$<hash hex>"}

`linebridge user add NAME --role ROLE` writes an entry; passwords are never stored in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from asyncua.crypto.permission_rules import User, UserRole

from bridge.errors import ConfigurationError

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
            or not isinstance(entry.get("password"), str)
        ):
            raise ConfigurationError(
                f"{path}: users.{name}: needs role ({', '.join(ROLES)}) and a password hash"
            )
    return users


def add_user(path: Path, name: str, role: str, password: str) -> None:
    if role not in ROLES:
        raise ConfigurationError(f"role must be one of {', '.join(ROLES)}")
    users = load_users(path)
    users[name] = {"role": role, "password": hash_password(password)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"users": users}, sort_keys=True))
    path.chmod(0o600)


class RoleUserManager:
    """asyncua user manager: username/password from the users file; no anonymous access."""

    def __init__(self, path: Path, audit: Any = None) -> None:
        self.path = path
        self.audit = audit

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is None:
            self._audit("login", "", "refused: anonymous or certificate user not configured")
            return None
        entry = load_users(self.path).get(username)
        if entry is None or password is None or not verify_password(password, entry["password"]):
            self._audit("login", username, "refused: wrong user name or password")
            return None
        role = entry["role"]
        self._audit("login", username, f"ok ({role})")
        return RoleUser(
            role=UserRole.Admin if role == "admin" else UserRole.User, name=username, lb_role=role
        )

    def _audit(self, event: str, user: str, outcome: str) -> None:
        if self.audit is not None:
            self.audit(event, user, "", outcome)
