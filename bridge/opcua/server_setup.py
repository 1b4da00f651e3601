"""The asyncua server's life: made, configured with its endpoints and security, listening, and
stopped within a second (the parts that touch asyncua's own start-up and shutdown)."""

from __future__ import annotations

import asyncio
import logging

import structlog
from asyncua import Server

from bridge.errors import ConfigurationError
from bridge.lifecycle import cancel_and_wait
from bridge.opcua import asyncua_seams, wire
from bridge.opcua.connections import ClientConnections
from bridge.opcua.endpoint_security import AuditHook, audit_sessions, check_exposure, secure_server
from bridge.opcua.notify import share_notified_values
from bridge.opcua.session_limits import SessionLedger
from bridge.opcua.settings import OpcUaSettings

log = structlog.get_logger(__name__)


async def configure(server: Server, app_uri: str, settings: OpcUaSettings, audit: AuditHook) -> SessionLedger:
    """Endpoints, certificates, users and roles as configured (docs/security.md), sessions
    audited and capped per client, and the faster notification path installed."""
    server.iserver.bind_condition_methods = True  # ConditionRefresh for the alarms (alarm_conditions.py)
    asyncua_seams.share_standard_address_space(server)
    await server.init()
    asyncua_seams.check(server, secured=settings.security is not None)  # before anything is hooked
    server.set_endpoint(settings.endpoint)
    server.set_server_name(settings.server_name)
    await server.set_application_uri(app_uri)
    offers_none = check_exposure(settings.endpoint, settings.security, settings.allow_insecure_remote)
    sessions = SessionLedger(server, settings.limits)
    connections = ClientConnections(server, settings.limits.max_connections_per_client, sessions.refuse)
    await secure_server(server, app_uri, settings.security, offers_none, audit, connections)
    if connections.install():
        sessions.connections = connections
    audit_sessions(server, audit)
    sessions.install()
    share_notified_values(server)
    wire.install()
    return sessions


async def listen(server: Server, endpoint: str) -> str:
    """Start serving; returns the endpoint with the port bound (for port 0). A port in use is a
    ConfigurationError in one line, not a traceback."""
    starting = logging.getLogger("asyncua.server.server")
    level = starting.level
    starting.setLevel(logging.CRITICAL)
    try:
        await server.start()
    except OSError as exc:  # asyncua has stopped its internals already
        raise ConfigurationError(
            f"OPC UA endpoint {endpoint}: cannot listen ({exc.strerror or exc})"
        ) from None
    finally:
        starting.setLevel(level)
    port = server.bserver.port if server.bserver is not None else None
    return endpoint.replace(":0/", f":{port}/")


async def stop(server: Server) -> None:
    # asyncua stops its clock task by a flag the task reads once a second: cancel it instead, so
    # SIGTERM ends the bridge well within a second.
    clock = server.iserver.time_task
    if clock is not None:
        await cancel_and_wait([clock])
        server.iserver.time_task = None
    try:
        async with asyncio.timeout(10):
            await server.stop()
    except TimeoutError:
        log.error("opcua_stop_timeout")
