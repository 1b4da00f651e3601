"""What one OPC UA client may claim: sessions (anonymous ones fewer, and a share per client address),
subscriptions and monitored items per session, and how long an abandoned session keeps them
(connections per client address: connections.py).

asyncua caps subscriptions only for the whole server (1,000): one anonymous client took every slot
and every other client got BadTooManySubscriptions; 200 sessions × 1,000 monitored items grew the
bridge by 356 MB. Here each session has its own share, a client over a cap gets the spec's code
(BadTooManySessions, BadTooManySubscriptions, BadTooManyMonitoredItems per item), and a session
whose client has gone is closed, with its subscriptions, after `max_session_timeout_s` at most.

asyncua has no hooks for these; this server instance's methods are wrapped (not the classes), the
same seam `endpoint_security.audit_sessions` uses: the internal server's `create_session` and
`register/unregister_external_session`, each session's `activate_session`, and the subscription
service's `create_subscription`, `create_monitored_items` and `delete_monitored_items`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from asyncua import Server, ua
from asyncua.common.utils import ServiceError

from bridge.errors import amount_option, count_option
from bridge.limits import LogThrottle
from bridge.opcua import asyncua_seams
from bridge.security.refusals import address_of
from bridge.security.rules import current_channel

if TYPE_CHECKING:
    from bridge.opcua.connections import ClientConnections

log = structlog.get_logger(__name__)

# What a client may be refused, each a series of /metrics from the start (at 0)
REFUSALS = (
    "connections_per_client", "sessions", "sessions_per_client", "anonymous_sessions",
    "subscriptions_per_session", "monitored_items",
)  # fmt: skip


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int = 50
    max_anonymous_sessions: int = 10
    max_sessions_per_client: int = 8  # from one client address (connections.py tells it)
    max_connections_per_client: int = 16  # open at once from one address, sessions or not
    max_subscriptions_per_session: int = 10
    max_monitored_items_per_session: int = 10_000
    max_monitored_items: int = 50_000  # all sessions together (~1.8 KB each in asyncua)
    max_queue_size: int = 10  # values a data item may queue between publishes (0 or 1 asked: 1)
    max_event_queue_size: int = 1_000  # events an event item may queue (0 asked: this many)
    max_session_timeout_s: float = 120.0  # an abandoned session and its subscriptions live this long

    def __post_init__(self) -> None:  # a --config file's values come unchecked by the command line
        for field in dataclasses.fields(self):
            if field.name != "max_session_timeout_s":
                count_option(field.name, getattr(self, field.name))
        amount_option("max_session_timeout", self.max_session_timeout_s, "seconds, more than 0", zero=False)


class SessionLedger:
    """Who holds what, kept beside asyncua's own tables (which it prunes; these follow it)."""

    def __init__(self, server: Server, limits: SessionLimits) -> None:
        self.limits = limits
        self._iserver = server.iserver
        self._subs = server.iserver.subscription_service
        self.sessions: set[Any] = set()
        self.anonymous: set[Any] = set()
        self.per_client: Counter[str] = Counter()  # sessions per client address ("": unknown)
        self._client_of: dict[Any, str] = {}
        self._items: Counter[int] = Counter()  # subscription id → monitored items it holds
        self.refused: Counter[str] = Counter()
        self.connections: ClientConnections | None = None  # set by server_setup once installed
        self._throttle = LogThrottle()

    def claims(self) -> tuple[dict[str, int], dict[str, int]]:
        """What clients hold now, and what they were refused since start, by limit (for /metrics)."""
        open_now = self.connections.open if self.connections is not None else Counter()
        held = {
            "sessions": len(self.sessions),
            "anonymous_sessions": len(self.anonymous),
            "connections": sum(open_now.values()),
            "client_addresses": len(open_now),
        }
        return held, {what: self.refused[what] for what in REFUSALS}

    def install(self) -> None:
        iserver, subs = self._iserver, self._subs
        longest_ms = self.limits.max_session_timeout_s * 1000
        iserver.max_session_timeout_ms = min(iserver.max_session_timeout_ms, longest_ms)
        iserver.min_session_timeout_ms = min(iserver.min_session_timeout_ms, iserver.max_session_timeout_ms)
        create_session = iserver.create_session
        register, unregister = iserver.register_external_session, iserver.unregister_external_session
        create_subscription = subs.create_subscription
        create_items, delete_items = subs.create_monitored_items, subs.delete_monitored_items
        modify_items = subs.modify_monitored_items

        def creating(name: str, *args: Any, external: bool = False, **kwargs: Any) -> Any:
            if not external:
                return create_session(name, *args, external=external, **kwargs)
            if len(self.sessions) >= self.limits.max_sessions:
                self.refuse("sessions", self.limits.max_sessions)
                raise ServiceError(ua.StatusCodes.BadTooManySessions)
            client = address_of(str(current_channel.get() or ""))  # "": not known (connections.py)
            if client and self.per_client[client] >= self.limits.max_sessions_per_client:
                self.refuse("sessions_per_client", self.limits.max_sessions_per_client)
                raise ServiceError(ua.StatusCodes.BadTooManySessions)
            session = create_session(name, *args, external=external, **kwargs)
            self._client_of[session] = client
            self.per_client[client] += 1
            self._guard_activation(session)
            return session

        def opened(session: Any) -> None:
            self.sessions.add(session)
            register(session)

        def closed(session: Any) -> None:
            self.sessions.discard(session)
            self.anonymous.discard(session)
            if (client := self._client_of.pop(session, None)) is not None:
                self.per_client[client] -= 1
                if self.per_client[client] <= 0:
                    del self.per_client[client]
            unregister(session)

        async def subscribing(params: Any, call: Any, session_id: ua.NodeId, *rest: Any, **kw: Any) -> Any:
            held = sum(1 for sub in subs.subscriptions.values() if sub.session_id == session_id)
            if held >= self.limits.max_subscriptions_per_session:
                self.refuse("subscriptions_per_session", self.limits.max_subscriptions_per_session)
                raise ServiceError(ua.StatusCodes.BadTooManySubscriptions)
            return await create_subscription(params, call, session_id, *rest, **kw)

        async def monitoring(params: ua.CreateMonitoredItemsParameters) -> list[Any]:
            sub = subs.subscriptions.get(params.SubscriptionId)
            if sub is None:
                return await create_items(params)  # asyncua answers BadSubscriptionIdInvalid
            answers: list[Any] = []  # per item asked: a refusal, or None for asyncua's answer
            taken = []
            room = self._room(sub.session_id)
            for item in params.ItemsToCreate:
                asked = item.RequestedParameters
                asked.QueueSize = self._queue_size(item.ItemToMonitor.AttributeId, asked.QueueSize)
                if _event_item_without_filter(item):  # asyncua failed the whole request (BadInternalError)
                    answers.append(ua.StatusCode(ua.StatusCodes.BadMonitoredItemFilterInvalid))
                elif len(taken) >= room:
                    answers.append(ua.StatusCode(ua.StatusCodes.BadTooManyMonitoredItems))
                else:
                    answers.append(None)
                    taken.append(item)
            params.ItemsToCreate = taken
            created = iter(list(await create_items(params)) if taken else [])
            results = [
                next(created) if a is None else ua.MonitoredItemCreateResult(StatusCode=a) for a in answers
            ]
            self._items[params.SubscriptionId] += sum(1 for r in results if r.StatusCode.is_good())
            over = ua.StatusCodes.BadTooManyMonitoredItems
            if too_many := sum(1 for a in answers if a is not None and a.value == over):
                self.refuse("monitored_items", too_many)
            return results

        def unmonitoring(params: ua.DeleteMonitoredItemsParameters) -> list[ua.StatusCode]:
            results: list[ua.StatusCode] = delete_items(params)  # asyncua's is synchronous
            gone = sum(1 for r in results if r.is_good())
            self._items[params.SubscriptionId] = max(0, self._items[params.SubscriptionId] - gone)
            return results

        def modifying(params: ua.ModifyMonitoredItemsParameters) -> list[ua.MonitoredItemModifyResult]:
            sub = subs.subscriptions.get(params.SubscriptionId)
            if sub is not None:  # else asyncua answers BadSubscriptionIdInvalid
                _handles, items = asyncua_seams.item_tables(sub.monitored_item_srv)
                for item in params.ItemsToModify:
                    data = items.get(item.MonitoredItemId)
                    watched = data.read_value_id.AttributeId if data is not None else ua.AttributeIds.Value
                    asked = item.RequestedParameters
                    asked.QueueSize = self._queue_size(watched, asked.QueueSize)
            return modify_items(params)  # asyncua takes a modified queue size as asked, unrevised

        iserver.create_session = creating
        iserver.register_external_session = opened
        iserver.unregister_external_session = closed
        subs.create_subscription = subscribing
        subs.create_monitored_items = monitoring
        subs.delete_monitored_items = unmonitoring
        subs.modify_monitored_items = modifying

    def _guard_activation(self, session: Any) -> None:
        activate = session.activate_session

        def activating(params: ua.ActivateSessionParameters, *args: Any, **kwargs: Any) -> Any:
            token = params.UserIdentityToken
            anonymous = isinstance(token, ua.AnonymousIdentityToken) or (
                isinstance(token, ua.ExtensionObject) and token.TypeId == ua.NodeId(ua.ObjectIds.Null)
            ) or token is None
            full = len(self.anonymous) >= self.limits.max_anonymous_sessions
            if anonymous and session not in self.anonymous and full:
                self.refuse("anonymous_sessions", self.limits.max_anonymous_sessions)
                raise ServiceError(ua.StatusCodes.BadTooManySessions)
            result = activate(params, *args, **kwargs)
            if anonymous:
                self.anonymous.add(session)
            else:
                self.anonymous.discard(session)
            return result

        session.activate_session = activating

    def _queue_size(self, attribute: int, asked: int) -> int:
        """The queue an item gets (Part 4, 7.21): a data item asking 0 or 1 gets 1 (asyncua gave it
        its whole cap, 10,000), more up to `max_queue_size`; an event item up to its own cap. What
        a client that never asks for a publish can make the bridge hold is then items × the cap."""
        if attribute == ua.AttributeIds.EventNotifier:
            cap = self.limits.max_event_queue_size
            return cap if asked <= 0 else min(asked, cap)
        return 1 if asked <= 1 else min(asked, self.limits.max_queue_size)

    def _room(self, session_id: ua.NodeId) -> int:
        """Monitored items `session_id` may still create (its share, and what the server has left)."""
        live = self._subs.subscriptions
        for gone in [sid for sid in self._items if sid not in live]:  # deleted with their items
            del self._items[gone]
        mine = sum(n for sid, n in self._items.items() if live[sid].session_id == session_id)
        total = sum(self._items.values())
        return min(
            self.limits.max_monitored_items_per_session - mine, self.limits.max_monitored_items - total
        )

    def refuse(self, what: str, limit: int) -> None:
        """Counted; logged at most every 10 s a kind, so a client hammering a cap is no log flood."""
        self.refused[what] += 1
        if self._throttle.due(what):
            log.warning("opcua_limit_reached", limit_of=what, limit=limit, refused_so_far=self.refused[what])


def _event_item_without_filter(item: ua.MonitoredItemCreateRequest) -> bool:
    """An item on events must say which fields it wants (an EventFilter, Part 4, 7.22.3)."""
    events = item.ItemToMonitor.AttributeId == ua.AttributeIds.EventNotifier
    return events and not isinstance(item.RequestedParameters.Filter, ua.EventFilter)
