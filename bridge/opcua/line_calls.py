"""What the line's methods do to the bridge, each audited with the caller's user and certificate
and announced as an event: the part of a method call that is not OPC UA argument handling
(methods.py does that)."""

from __future__ import annotations

from typing import Any

import structlog
from asyncua import ua

from bridge.domain.model import Order
from bridge.errors import (
    ConfigurationError,
    DecisionRequired,
    MappingError,
    MappingIncompatible,
    OrderRejected,
    TryLater,
)
from bridge.limits import LOGGED_TEXT_CHARS, clip
from bridge.opcua.order_nodes import OrderNodes
from bridge.opcua.plant import PlantModel
from bridge.security.refusals import client_of
from bridge.security.rules import current_channel, current_user
from bridge.service import Bridge

log = structlog.get_logger(__name__)


def audit_with_channel(bridge: Bridge, event: str, user: str, thumbprint: str, outcome: str) -> bool:
    """One audit record (Bridge.audit), with the channel of the request being handled."""
    return bridge.audit(event, user, thumbprint, outcome, str(current_channel.get() or ""))


def caller() -> tuple[str, str, str]:
    """The request being handled, as the audit records it: its user (or anonymous), client
    certificate thumbprint and channel."""
    user = current_user.get()
    name = (user.name or "") if user is not None else "anonymous"
    return name, getattr(user, "thumbprint", ""), str(current_channel.get() or "")


def caller_client() -> str:
    """Who calls, for the per-client limit of open orders: the user, else anonymous at its address."""
    name, _thumbprint, channel = caller()
    return client_of(name, channel)


class LineCalls:
    def __init__(self, bridge: Bridge, plant: PlantModel, orders: OrderNodes) -> None:
        self.bridge, self.plant, self.orders = bridge, plant, orders

    def audit_caller(self, event: str, outcome: str) -> bool:
        """An audit record of the request being handled, with its user and client certificate;
        False for a repeated refusal only counted (Bridge.audit)."""
        name, thumbprint, channel = caller()
        return self.bridge.audit(event, name, thumbprint, outcome, channel)

    async def submit(self, order_id: Any, product: Any, options: Any, quantity: Any, priority: Any) -> Order:
        order = await self.bridge.submit(
            order_id, product, options, quantity=quantity, priority=priority, client=caller_client()
        )
        self.audit_caller("order_submit", f"ok {order.order_id}")
        await self.orders.show(order)
        return order

    async def node_of(self, order: Order) -> ua.NodeId:
        return await self.orders.show(order)

    async def cancel(self, order_id: str) -> Order:
        try:
            order = await self.bridge.cancel(order_id)
        except OrderRejected as exc:
            self.audit_caller("order_cancel", f"refused {order_id}: {exc.reason}")
            raise
        self.audit_caller("order_cancel", f"ok {order_id}")
        return order

    async def rejected(self, order_id: str, exc: OrderRejected) -> None:
        """Audited, logged and announced as the audit's tally has it: a client's repeated
        refusals are ten a minute, then one count (security/refusals.py)."""
        order_id, reason = clip(order_id, LOGGED_TEXT_CHARS), clip(exc.reason, LOGGED_TEXT_CHARS)
        if self.audit_caller("order_submit", f"refused {order_id}: {exc}"):
            log.warning("order_refused", order_id=order_id, field=exc.field, reason=reason)
            await self.plant.fire("notice", f"order {order_id} refused: {exc}", 500)

    def refused_for_now(self, order_id: str, exc: TryLater) -> None:
        """A submit refused through no fault of its own (the journal, its disk, a limit): audited
        and logged as `rejected` is, not announced (the line's admission event says it once)."""
        order_id = clip(order_id, LOGGED_TEXT_CHARS)
        if self.audit_caller("order_submit", f"refused {order_id}: {exc.reason}"):
            log.warning("order_refused", order_id=order_id, reason=exc.reason)

    async def reload(self) -> tuple[int, list[str]]:
        """ReloadMapping: audited, logged and announced as an event, whatever the outcome."""
        try:
            changed = await self.bridge.reload_mapping()
        except MappingError as exc:  # MappingIncompatible too
            report = [str(issue) for issue in exc.issues]
            code = ua.StatusCodes.BadInvalidState
            if not isinstance(exc, MappingIncompatible):
                code = ua.StatusCodes.BadConfigurationError
        except ConfigurationError as exc:
            report, code = [str(exc)], ua.StatusCodes.BadConfigurationError
        else:
            self.audit_caller("mapping_reload", f"ok: {', '.join(changed) or 'no change'}")
            await self.plant.fire("notice", f"mapping reloaded: {len(changed)} change(s)", 300)
            return ua.StatusCodes.Good, changed
        log.warning("mapping_reload_refused", issues=report)
        self.audit_caller("mapping_reload", f"refused: {'; '.join(report)}")
        await self.plant.fire("notice", f"mapping reload refused: {len(report)} issue(s)", 600)
        return code, report

    async def clear_station(self, station: str, decision: str = "") -> tuple[int, str]:
        """ClearStationError: audited and announced like its twin ReloadMapping."""
        label = clip(station, LOGGED_TEXT_CHARS)
        stations = self.bridge.mapping.stations
        if station not in stations:
            self.audit_caller("station_clear", f"refused {label}: no such station")
            return ua.StatusCodes.BadNotFound, f"no station {label!r} (stations: {', '.join(stations)})"
        try:
            reason = self.bridge.engine.clear_station_error(station, decision or None)
        except DecisionRequired as exc:
            self.audit_caller("station_clear", f"refused {label}: {exc}")
            return ua.StatusCodes.BadInvalidState, str(exc)
        report = f"cleared: {reason}" if reason else "the station was not held"
        if reason and decision:
            report = f"{decision}: {report}"
        self.audit_caller("station_clear", f"ok {station}: {report}")
        return ua.StatusCodes.Good, report
