"""Who may use the HTTP face with `--security`: the users file and roles of the OPC UA server.

HTTP Basic over TLS (the server's own certificate), checked against `DATA_DIR/users.yaml`: any
user may look (an observer reads the line view and /metrics); submitting and cancelling orders
needs an operator or above, as the OPC UA methods do. Password checks (scrypt) run in a worker
thread; a verified login is remembered for a minute (by a hash of the password, never the
password) so a page's requests do not each cost a check.

Failed logins back off so that a third party cannot turn the back-off against a real user
(OWASP's "device cookie"): a browser that has logged in as a user gets a signed cookie for that
user, and its logins back off only on its own failures. Any other client backs off per user and
address (3 free failures) and per address (20): guessing from one address is slowed whatever the
user names, while an operator's browser on the same PC or NAT keeps working. Logins are audited
in the journal, as for OPC UA, repeated refusals as one row with a count (security/refusals.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.limits import clip
from bridge.opcua.channel_guard import LoginBackoff
from bridge.security.users import ROLES, RoleUserManager, at_least, load_users

REMEMBER_S = 60.0
DEVICE_COOKIE = "linebridge_device"
DEVICE_COOKIE_S = 30 * 24 * 3600
WRITERS = {("POST", "/api/orders")}  # and /api/orders/{id}/cancel, /api/alarms/{id}/ack…, below
WRITER_PREFIXES = ("/api/orders/", "/api/alarms/")
Audit = Callable[[str, str, str, str, str], None]  # event, user, thumbprint, outcome, channel


class BasicAuth:
    def __init__(
        self,
        app: ASGIApp,
        users: RoleUserManager,
        audit: Audit,
        backoff: LoginBackoff,
        *,
        address_free: int = 20,
    ) -> None:
        self.app = app
        self.users = users
        self.audit = audit
        self.backoff = backoff  # per (user, address), and per (user, device) for a known browser
        self.address_backoff = LoginBackoff(
            free=address_free, initial_s=backoff.initial_s, max_s=backoff.max_s
        )  # per address, whatever the user name
        self._device_key = secrets.token_bytes(32)  # cookies of an earlier run are not honoured
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
        device = self._device(scope, user)
        role = await self._role(user, password, client[0], device, channel)
        if role is None:
            await _reply(send, 401, b"wrong user name or password (or too many tries: wait)", realm=True)
            return
        if _writes(scope) and not at_least(role, "operator"):
            self.audit(
                "denied", user, "", f"{scope['method']} {clip(scope['path'], 200)}: needs operator", channel
            )
            reason = {"reason": f"user {user} ({role}) may not submit or cancel orders, nor answer alarms"}
            await _reply(send, 403, json.dumps(reason).encode())
            return
        scope.setdefault("state", {})["user"] = (user, role, channel)
        if device is None:  # the first page of a browser's login: from now on it is known
            send = self._with_device_cookie(send, user)
        await self.app(scope, receive, send)

    async def _role(
        self, user: str, password: str, address: str, device: str | None, channel: str
    ) -> str | None:
        shown_user = clip(user, 64)
        buckets = [(self.backoff, f"{user}#{device}")] if device else [
            (self.backoff, f"{user}@{address}"), (self.address_backoff, address)
        ]  # fmt: skip
        wait = max(backoff.wait_s(bucket) for backoff, bucket in buckets)
        if wait > 0:  # before the remembered logins: guesses must not be tried against those for free
            self.audit("login", shown_user, "", "refused: backing off", channel)
            return None
        key = (user, hashlib.sha256(password.encode()).hexdigest())
        known = self._known.get(key)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        verdict = await asyncio.to_thread(self.users.check_password, user, password)
        entry = (await asyncio.to_thread(load_users, self.users.path)).get(user) if verdict.ok else None
        if entry is None or entry.get("role") not in ROLES:
            for backoff, bucket in buckets:
                backoff.failed(bucket)
            self.audit("login", shown_user, "", "refused: wrong user name or password", channel)
            return None
        for backoff, bucket in buckets:
            backoff.succeeded(bucket)
        role = entry["role"]
        if known is None:
            self.audit("login", user, "", f"ok ({role})", channel)
        if len(self._known) > 1000:
            self._known.clear()
        self._known[key] = (role, time.monotonic() + REMEMBER_S)
        return role

    def _device(self, scope: Scope, user: str) -> str | None:
        """The id of this browser's device cookie when it is ours and for `user`, else None."""
        for name, value in scope.get("headers", []):
            if name != b"cookie":
                continue
            for part in value.decode("latin-1").split(";"):
                key, _, cookie = part.strip().partition("=")
                if key == DEVICE_COOKIE:
                    device, _, signature = cookie.partition(".")
                    if hmac.compare_digest(signature, self._sign(user, device)):
                        return device
        return None

    def _sign(self, user: str, device: str) -> str:
        return hmac.new(self._device_key, f"{user}\0{device}".encode(), hashlib.sha256).hexdigest()

    def _with_device_cookie(self, send: Send, user: str) -> Send:
        device = secrets.token_hex(8)
        cookie = (
            f"{DEVICE_COOKIE}={device}.{self._sign(user, device)}; Path=/; Max-Age={DEVICE_COOKIE_S};"
            " Secure; HttpOnly; SameSite=Strict"
        )

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
                message = {**message, "headers": headers}
            await send(message)

        return sending


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
    return (method, path) in WRITERS or (method == "POST" and path.startswith(WRITER_PREFIXES))


async def _reply(send: Send, status: int, body: bytes, *, realm: bool = False) -> None:
    headers = [(b"content-type", b"application/json" if body.startswith(b"{") else b"text/plain")]
    if realm:
        headers.append((b"www-authenticate", b'Basic realm="linebridge", charset="UTF-8"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
