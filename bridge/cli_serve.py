"""What `linebridge run` starts: the bridge and its faces, until a signal or idle stops it.

Kept apart from bridge/cli.py so that the client commands (order, station, alarm, ...) do not import
the server stack (the Modbus links, the OPC UA server, the journal's writer) they never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import resource
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import typer

from bridge.domain.admission import OpenOrderLimits
from bridge.errors import ConfigurationError, JournalSpaceLow, LineFull, OrderRejected
from bridge.journal.retention import retention_s
from bridge.lifecycle import collections_paused, settle_heap, stop_on_signals
from bridge.mapping import LineMapping
from bridge.opcua.endpoint_security import SecuritySettings, check_exposure
from bridge.opcua.face import OpcUaFace, OpcUaSettings
from bridge.opcua.session_limits import SessionLimits
from bridge.service import Bridge, BridgeSettings

if TYPE_CHECKING:
    from bridge.http.server import HttpSettings


def serve(line: LineMapping, orders: list[dict[str, Any]], opts: dict[str, Any]) -> None:
    """`linebridge run` once its options are read: the bridge, its faces, until stopped."""
    settings = BridgeSettings(
        mapping_file=Path(opts["mapping"]),
        deployment_file=opts["deployment"],
        data_dir=Path(opts["data_dir"]),
        telemetry_interval_s=opts["telemetry_interval"],
        step_timeout_s=opts["step_timeout"],
        request_timeout_s=opts["request_timeout"],
        journal_reserve_mb=opts["journal_reserve_mb"],
    )
    try:
        opcua = _opcua_settings(opts)  # its limits checked: --config's come unchecked
        limits = OpenOrderLimits(opts["max_open_orders"], opts["max_open_orders_per_client"])
        keep_s = _journal_retention_s(opts["journal_retention_days"], opcua)
        settings = dataclasses.replace(settings, open_orders=limits, journal_retention_s=keep_s)  # checked
        if opcua is not None:  # an exposed None endpoint is refused before anything starts
            check_exposure(opcua.endpoint, opcua.security, opcua.allow_insecure_remote)
        web = None
        if opts["http"]:
            from bridge.http.server import HttpSettings  # uvicorn and Starlette: only when asked for

            web = HttpSettings.parse(opts["http"], tuple(opts["http_allowed_host"]))
        if web is not None:
            secured = opcua is not None and opcua.security is not None
            web.check_exposure(opts["allow_insecure_remote"], secured=secured)
        _raise_open_file_limit()
        until_idle = opts["exit_when_idle"]
        with collections_paused():  # until _run settles the heap: start-up builds what lives on
            asyncio.run(
                _run(line, settings, orders, opcua, web, demo=opts["demo"], exit_when_idle=until_idle)
            )
    except ConfigurationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _opcua_settings(opts: dict[str, Any]) -> OpcUaSettings | None:
    """The OPC UA face's settings from the options, or None with --no-opcua."""
    if opts["no_opcua"]:
        return None
    data_dir = Path(opts["data_dir"])
    secure = None
    if opts["security"]:
        secure = SecuritySettings(
            pki_dir=Path(opts["pki_dir"] or data_dir / "pki"),
            users_file=Path(opts["users"] or data_dir / "users.yaml"),
            allow_none_endpoint=opts["allow_none_endpoint"],
        )
    return OpcUaSettings(
        endpoint=opts["opcua_endpoint"],
        order_retention_s=opts["order_retention"],
        finished_in_full=opts["finished_in_full"],
        security=secure,
        allow_insecure_remote=opts["allow_insecure_remote"],
        limits=SessionLimits(
            max_sessions=opts["max_sessions"],
            max_anonymous_sessions=opts["max_anonymous_sessions"],
            max_sessions_per_client=opts["max_sessions_per_client"],
            max_connections_per_client=opts["max_connections_per_client"],
            max_subscriptions_per_session=opts["max_subscriptions_per_session"],
            max_monitored_items_per_session=opts["max_monitored_items_per_session"],
            max_queue_size=opts["max_queue_size"],
            max_session_timeout_s=opts["max_session_timeout"],
        ),
    )


def _journal_retention_s(days: object, opcua: OpcUaSettings | None) -> float:
    """--journal-retention-days in seconds, no shorter than the OPC UA face keeps finished orders
    (which it reads back from the journal when a client asks for one)."""
    keep_s = retention_s(days)
    if keep_s and opcua is not None and keep_s < opcua.order_retention_s:
        raise ConfigurationError(
            f"journal_retention_days: {days} days is shorter than --order-retention"
            f" ({opcua.order_retention_s:g} s), for which finished orders stay browsable"
        )
    return keep_s


def _raise_open_file_limit() -> None:
    """The soft open-file limit up to the hard one: each client connection, PLC link and SQLite file
    is a descriptor, and a distribution's default soft limit (often 1,024) is reached by a flood
    long before the connection caps (docs/security.md) would be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _run(
    line: LineMapping,
    settings: BridgeSettings,
    orders: list[dict[str, Any]],
    opcua: OpcUaSettings | None,
    web: HttpSettings | None,
    *,
    demo: bool,
    exit_when_idle: bool,
) -> None:
    stop = stop_on_signals()
    loop = asyncio.get_running_loop()
    bridge = Bridge(line, settings)
    face = OpcUaFace(bridge, opcua) if opcua is not None else None
    if face is not None:
        bridge.before_links.append(face.prepare)
    async with bridge:
        with contextlib.suppress(NotImplementedError):  # `systemctl reload`, `kill -HUP`
            loop.add_signal_handler(signal.SIGHUP, lambda: _reload_on_signal(bridge))
        if face is not None:
            await face.start()  # ConfigurationError (one line, exit 2) if its port is taken
        http = None
        if web is not None:
            from bridge.http.server import HttpFace

            http = HttpFace(bridge, web, opcua.security if opcua is not None else None)
            if face is not None:  # the line view's trends: its history store; /metrics: its clients' claims
                http.view.trend_source = face.trend
                http.metrics.opcua_claims = face.claims
        try:
            if http is not None:
                await http.start()  # ConfigurationError likewise
            settle_heap()
            await _serve(bridge, line, orders, stop, demo=demo, exit_when_idle=exit_when_idle)
        finally:
            if http is not None:
                await http.stop()
            if face is not None:
                await face.stop()


def _reload_on_signal(bridge: Bridge) -> None:
    log = structlog.get_logger("bridge.cli")

    async def reload() -> None:
        try:
            await bridge.reload_mapping()  # logs what changed
        except ConfigurationError as exc:  # MappingError included: every issue, nothing changed
            log.error("mapping_reload_refused", reason=str(exc))

    task = asyncio.create_task(reload())
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


async def _serve(
    bridge: Bridge,
    line: LineMapping,
    orders: list[dict[str, Any]],
    stop: asyncio.Event,
    *,
    demo: bool,
    exit_when_idle: bool,
) -> None:
    log = structlog.get_logger("bridge.cli")
    if demo:
        product = next(iter(line.products))
        orders = [*orders, {"order_id": f"demo-{int(time.time())}", "product": product, "options": {}}]
    for order in orders:
        try:
            accepted = await bridge.submit(
                order.get("order_id"),
                order.get("product"),
                order.get("options"),
                quantity=order.get("quantity"),
                priority=order.get("priority", 0),
                client="--submit",
            )
            log.info("order_submitted", order_id=accepted.order_id, state=str(accepted.state))
        except OrderRejected as exc:
            log.error("order_rejected", order_id=order.get("order_id"), field=exc.field, reason=exc.reason)
        except (LineFull, JournalSpaceLow) as exc:
            log.error("order_refused", order_id=order.get("order_id"), reason=exc.reason)
    waiters = [asyncio.create_task(stop.wait())]
    if exit_when_idle:
        waiters.append(asyncio.create_task(bridge.wait_idle()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
