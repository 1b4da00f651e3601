"""What the HTTP face refuses before any route sees a request: foreign Host headers, cross-site
writes, and more connections than it can serve.

A browser is the HTTP face's client, and so is any page a browser has open. DNS rebinding points an
attacker's name at our address (its requests carry the attacker's Host), and a page on any origin
can POST a form (`text/plain` or form-encoded, no preflight) with the user's saved login. So every
request must name one of our hosts, and a state-changing one must be JSON (a cross-site page cannot
send that without a CORS preflight we never answer) and come from our own origin when the browser
says where it comes from (Origin, else Referer; `Sec-Fetch-Site: cross-site` alone is enough to
refuse). A client that is not a browser sends neither and is judged by its login.

Connections are capped in total and per client address, and one that has not finished its request
headers within `header_timeout_s` is closed: half-open connections otherwise hold file descriptors
until the process can accept nothing, OPC UA clients included.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from bridge.limits import LogThrottle, clip, nesting_depth

log = structlog.get_logger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 256
    max_connections_per_client: int = 32
    header_timeout_s: float = 10.0
    allowed_hosts: tuple[str, ...] = ()  # beyond the listening address and loopback names


def allowed_host_names(listen_host: str, extra: tuple[str, ...]) -> frozenset[str]:
    """The names a Host header may carry: the address we listen on, loopback's names when we listen
    there, this machine's names when we listen on every address, and the configured ones."""
    names = {listen_host.lower(), *(h.lower() for h in extra)}
    if listen_host in ("127.0.0.1", "localhost", "::1") or listen_host.startswith("127."):
        names |= {"127.0.0.1", "localhost", "::1"}
    if listen_host in ("0.0.0.0", "::", ""):
        names |= {"127.0.0.1", "localhost", "::1", socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def _host_name(value: str) -> str:
    """A Host header's name without its port: `[::1]:8080` → `::1`, `a.b:80` → `a.b`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class RequestGuard:
    """ASGI middleware in front of everything (the login included): Host, then cross-site writes."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.refused: Counter[str] = Counter()
        self._throttle = LogThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = _host_name(headers.get("host", ""))
        if host not in self.hosts:
            await self._refuse(send, 421, "host", f"Host {clip(host, 80)!r} is not a name of this bridge")
            return
        if scope["method"] in WRITE_METHODS:
            reason = _cross_site(scope, headers)
            if reason is not None:
                await self._refuse(send, 403, "cross_site", reason)
                return
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                await self._refuse(send, 415, "content_type", "a write must be sent as application/json")
                return
        await self.app(scope, receive, send)

    async def _refuse(self, send: Send, status: int, why: str, reason: str) -> None:
        self.refused[why] += 1
        if self._throttle.due():
            log.warning("http_request_refused", why=why, reason=reason, refused_so_far=dict(self.refused))
        await reply(send, status, {"reason": reason})


def _cross_site(scope: Scope, headers: dict[str, str]) -> str | None:
    """Why a write is not from our own origin, or None: Origin (else Referer) must be ours."""
    if headers.get("sec-fetch-site") == "cross-site":
        return "cross-site request refused (Sec-Fetch-Site: cross-site)"
    ours = f"{scope.get('scheme', 'http')}://{headers.get('host', '').lower()}"
    origin = headers.get("origin")
    if origin is not None:
        return None if origin.lower() == ours else f"cross-site request refused (Origin {clip(origin, 80)})"
    referer = headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        if f"{parts.scheme}://{parts.netloc}".lower() != ours:
            return f"cross-site request refused (Referer {clip(referer, 80)})"
    return None


async def reply(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


@dataclass
class ConnectionLedger:
    """Open connections, in total and per client address, shared by every connection's protocol."""

    limits: HttpLimits
    open: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    timed_out: int = 0
    _throttle: LogThrottle = field(default_factory=LogThrottle)

    @property
    def total(self) -> int:
        return sum(self.open.values())

    def admit(self, address: str) -> bool:
        if self.total >= self.limits.max_connections or (
            self.open[address] >= self.limits.max_connections_per_client
        ):
            self.refused += 1
            self.say("http_connection_refused", address)
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def say(self, event: str, address: str) -> None:
        if self._throttle.due():
            log.warning(
                event, client=address, open=self.total, refused=self.refused, timed_out=self.timed_out
            )


def guarded_protocol(ledger: ConnectionLedger) -> Callable[..., asyncio.Protocol]:
    """uvicorn's h11 protocol with the ledger's caps and a deadline for the request headers, as
    the class uvicorn.Config takes for `http` (only asyncio's public Protocol methods are
    overridden)."""

    class GuardedH11(H11Protocol):
        _address = ""
        _deadline: asyncio.TimerHandle | None = None
        _tail = b""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if peer else "?"
            if not ledger.admit(address):
                transport.abort()  # its descriptor back at once; nothing is said to a flood
                return
            self._address = address
            self._deadline = asyncio.get_running_loop().call_later(
                ledger.limits.header_timeout_s, self._too_slow, transport
            )
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if self._deadline is not None:
                seen = self._tail + data
                if b"\r\n\r\n" in seen:  # the first request's headers are complete
                    self._deadline.cancel()
                    self._deadline = None
                self._tail = seen[-3:]
            super().data_received(data)

        def _too_slow(self, transport: asyncio.Transport) -> None:
            ledger.timed_out += 1
            ledger.say("http_header_timeout", self._address)
            transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._address:
                return  # refused in connection_made: never counted, never handed to uvicorn
            if self._deadline is not None:
                self._deadline.cancel()
            ledger.release(self._address)
            self._address = ""
            super().connection_lost(exc)

    return GuardedH11


async def read_json(
    chunks_of: Callable[[], Any], max_bytes: int, max_depth: int
) -> tuple[Any, str | None]:
    """A request body as JSON (`chunks_of`: Request.stream), or why it is refused: too long, too
    deep (found before parsing, so it never recurses), not JSON."""
    chunks, size = [], 0
    async for chunk in chunks_of():
        size += len(chunk)
        if size > max_bytes:
            return None, f"the body is longer than {max_bytes} bytes"
        chunks.append(chunk)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    if nesting_depth(text) > max_depth:
        return None, f"the JSON is nested deeper than {max_depth} levels"
    try:
        return json.loads(text), None
    except ValueError:
        return None, "the request is not JSON"
