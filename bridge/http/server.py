"""The HTTP server, on the bridge's own event loop: uvicorn serving a Starlette app.

The socket is bound here, before uvicorn is handed it, so a taken port is one clear error (uvicorn
would exit the process from inside its task) and port 0 tells its number; uvicorn's own signal
handling is left out (the bridge's SIGTERM and SIGINT handlers stop it, with everything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import structlog
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from bridge.errors import ConfigurationError
from bridge.http.auth import BasicAuth
from bridge.http.guard import (
    ConnectionLedger,
    HttpLimits,
    RequestGuard,
    allowed_host_names,
    guarded_protocol,
)
from bridge.http.lineview import LineView
from bridge.http.metrics import LineMetrics
from bridge.lifecycle import cancel_and_wait
from bridge.opcua.channel_guard import LoginBackoff
from bridge.opcua.endpoint_security import SecuritySettings
from bridge.opcua.uatypes import APP_URI_PREFIX
from bridge.security.pki import Pki
from bridge.security.users import RoleUserManager
from bridge.service import Bridge

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080  # 0: the system picks one (see HttpFace.address)
    limits: HttpLimits = field(default_factory=HttpLimits)  # connections, header deadline, Host names

    def check_exposure(self, allow_insecure_remote: bool, secured: bool = False) -> None:
        """Without --security the page has no login and can submit and cancel orders: beyond
        loopback only with the explicit flag (as the OPC UA None endpoint), and with a warning."""
        if secured or self.host == "localhost" or self.host == "::1" or self.host.startswith("127."):
            return
        if not allow_insecure_remote:
            raise ConfigurationError(
                f"--http on non-loopback address {self.host!r} without --security: no login, so anyone who"
                " reaches it can submit and cancel orders; add --security, or --allow-insecure-remote"
            )
        log.warning("http_insecure_exposed", host=self.host)

    @classmethod
    def parse(cls, text: str, allowed_hosts: tuple[str, ...] = ()) -> HttpSettings:
        """HOST:PORT, [IPv6]:PORT or :PORT (loopback); `allowed_hosts`: further names clients may
        reach it by (a DNS name, a reverse proxy's)."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ConfigurationError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
        return cls(host.strip("[]") or "127.0.0.1", int(port), HttpLimits(allowed_hosts=allowed_hosts))


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the bridge owns the process's signals
        yield


def metrics_endpoint(registry: CollectorRegistry) -> Callable[[Request], Awaitable[Response]]:
    """GET /metrics: the registry in Prometheus' text format, answered at that path itself (a
    mounted app answered 307 to /metrics/, and `curl …/metrics | grep` printed nothing)."""

    async def scrape(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return scrape


class HttpFace:
    def __init__(
        self, bridge: Bridge, settings: HttpSettings, security: SecuritySettings | None = None
    ) -> None:
        self.bridge = bridge
        self.settings = settings
        self.security = security
        self.metrics = LineMetrics(bridge)
        self.auth: BasicAuth | None = None
        self.view = LineView(bridge, audit=self.bridge.audit)
        self.app: ASGIApp = Starlette(
            routes=[*self.view.routes(), Route("/metrics", metrics_endpoint(self.metrics.registry))]
        )
        if security is not None:  # the users and roles of the OPC UA server (bridge/http/auth.py)
            backoff = LoginBackoff(
                free=security.login_free_failures,
                initial_s=security.login_backoff_s,
                max_s=security.login_backoff_max_s,
            )
            self.auth = BasicAuth(self.app, RoleUserManager(security.users_file), self.bridge.audit, backoff)
            self.app = self.auth
        hosts = allowed_host_names(settings.host, settings.limits.allowed_hosts)
        self.app = self.guard = RequestGuard(self.app, hosts)
        self.connections = ConnectionLedger(settings.limits)
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.address = ""

    async def start(self) -> None:
        host, port = self.settings.host, self.settings.port
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, reuse_port=False)
        except OSError as exc:
            raise ConfigurationError(f"HTTP {host}:{port}: cannot listen ({exc.strerror or exc})") from None
        sock.setblocking(False)
        bound = sock.getsockname()[1]
        await self.metrics.follower.start()
        await self.view.follower.start()
        tls: dict[str, str] = {}
        if self.security is not None:  # HTTPS with the server's own certificate (its PKI)
            tls = await self._certificate()
        config = uvicorn.Config(
            self.app, http=guarded_protocol(self.connections), log_config=None, access_log=False,
            lifespan="off", timeout_graceful_shutdown=1, timeout_keep_alive=5, **tls,
        )  # fmt: skip
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        scheme = "https" if tls else "http"
        self.address = f"{scheme}://{f'[{host}]' if ':' in host else host}:{bound}"
        log.info(
            "http_listening",
            address=self.address,
            line_view=f"{self.address}/",
            metrics=f"{self.address}/metrics",
        )

    async def _certificate(self) -> dict[str, str]:
        assert self.security is not None
        pki = Pki(self.security.pki_dir)
        await pki.ensure_server_certificate(f"{APP_URI_PREFIX}{self.bridge.mapping.line.name}")
        pem = pki.own_cert.with_suffix(".pem")

        def write() -> None:
            cert = x509.load_der_x509_certificate(pki.own_cert.read_bytes())
            pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

        await asyncio.to_thread(write)
        return {"ssl_certfile": str(pem), "ssl_keyfile": str(pki.own_key)}

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            try:
                async with asyncio.timeout(3):
                    await self._task
            except TimeoutError:
                await cancel_and_wait([self._task])
        await self.metrics.follower.stop()
        await self.view.follower.stop()
