"""Who may use the HTTP face with `--security`: the users file and roles of the OPC UA server.

HTTP Basic over TLS (the server's own certificate), checked against `DATA_DIR/users.yaml`: any
user may look (an observer reads the line view and /metrics); submitting and cancelling orders
needs an operator or above, as the OPC UA methods do. Password checks (scrypt) run in a worker
thread and back off per client address like OPC UA logins; a verified login is remembered for a
minute (by a hash of the password, never the password) so a page's requests do not each cost a
check. Logins and refusals are audited in the journal, as for OPC UA.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.limits import clip
from bridge.opcua.channel_guard import LoginBackoff
from bridge.security.users import ROLES, RoleUserManager, at_least, load_users

REMEMBER_S = 60.0
WRITERS = {("POST", "/api/orders")}  # and /api/orders/{id}/cancel, below
Audit = Callable[[str, str, str, str, str], None]  # event, user, thumbprint, outcome, channel


class BasicAuth:
    def __init__(self, app: ASGIApp, users: RoleUserManager, audit: Audit, backoff: LoginBackoff) -> None:
        self.app = app
        self.users = users
        self.audit = audit
        self.backoff = backoff
        self._known: dict[tuple[str, str], tuple[str, float]] = {}  # (user, password hash) → role, until

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        channel = f"https {client[0]}:{client[1]}"
        login = _basic(scope)
        if login is None:
            await _reply(send, 401, b"log in with a user of the bridge", realm=True)
            return
        user, password = login
        role = await self._role(user, password, client[0], channel)
        if role is None:
            await _reply(send, 401, b"wrong user name or password (or too many tries: wait)", realm=True)
            return
        if _writes(scope) and not at_least(role, "operator"):
            self.audit(
                "denied", user, "", f"{scope['method']} {clip(scope['path'], 200)}: needs operator", channel
            )
            reason = {"reason": f"user {user} ({role}) may not submit or cancel orders"}
            await _reply(send, 403, json.dumps(reason).encode())
            return
        scope.setdefault("state", {})["user"] = (user, role, channel)
        await self.app(scope, receive, send)

    async def _role(self, user: str, password: str, address: str, channel: str) -> str | None:
        key = (user, hashlib.sha256(password.encode()).hexdigest())
        known = self._known.get(key)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        wait = self.backoff.wait_s(address)
        if wait > 0:
            self.audit("login", clip(user, 64), "", f"refused: backing off {wait:.1f} s", channel)
            return None
        verdict = await asyncio.to_thread(self.users.check_password, user, password)
        entry = (await asyncio.to_thread(load_users, self.users.path)).get(user) if verdict.ok else None
        if entry is None or entry.get("role") not in ROLES:
            self.backoff.failed(address)
            self.audit("login", clip(user, 64), "", "refused: wrong user name or password", channel)
            return None
        self.backoff.succeeded(address)
        role = entry["role"]
        if known is None:
            self.audit("login", user, "", f"ok ({role})", channel)
        if len(self._known) > 1000:
            self._known.clear()
        self._known[key] = (role, time.monotonic() + REMEMBER_S)
        return role


def _basic(scope: Scope) -> tuple[str, str] | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization" and value[:6].lower() == b"basic ":
            try:
                user, sep, password = base64.b64decode(value[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return (user, password) if sep and user else None
    return None


def _writes(scope: Scope) -> bool:
    method, path = scope["method"], scope["path"]
    return (method, path) in WRITERS or (method == "POST" and path.startswith("/api/orders/"))


async def _reply(send: Send, status: int, body: bytes, *, realm: bool = False) -> None:
    headers = [(b"content-type", b"application/json" if body.startswith(b"{") else b"text/plain")]
    if realm:
        headers.append((b"www-authenticate", b'Basic realm="linebridge", charset="UTF-8"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
