"""HistoryRead as OPC UA Part 11 has it: pages with continuation points, released on request, and the
spec's Bad code for a node that keeps no history.

asyncua's HistoryManager hands every request to the storage and turns a timestamp into the
continuation point: it never says more values exist when NumValuesPerNode cut them off, cannot
release a point, and answers Good with nothing for a node that is not historized. Here a point is
an opaque random token naming where the next page starts; the server keeps the newest 100 of each
client address (Part 4's MaxHistoryContinuationPoints is per session; asyncua tells a history
manager no session, but the request's channel names its client), so one client opening page after
page drops its own oldest, never another's; an unknown or released token is
BadContinuationPointInvalid. Event history (ReadEventDetails) is the alarms' (alarm_history.py),
paged the same way.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from asyncua import ua
from asyncua.server.history import HistoryManager
from asyncua.server.internal_server import InternalServer

from bridge.errors import JournalUnavailable
from bridge.opcua.alarm_history import MAX_EVENTS_PER_PAGE, AlarmHistory, EventCursor
from bridge.opcua.history_store import HistoryStore
from bridge.opcua.uatypes import NO_TIME
from bridge.security.refusals import address_of
from bridge.security.rules import current_channel

log = structlog.get_logger(__name__)

MAX_VALUES_PER_PAGE = 10_000  # a request for "all" (NumValuesPerNode 0) still comes in pages
C = TypeVar("C", "_Cursor", EventCursor)


@dataclass(frozen=True)
class _Cursor:
    """Where a paged read goes on: the rest of [low, high] past `after`, `per_page` at a time."""

    node: ua.NodeId
    key: int
    low: float
    high: float
    ascending: bool
    per_page: int
    after: float


class PagedHistory(HistoryManager):  # type: ignore[misc]
    def __init__(
        self, iserver: InternalServer, store: HistoryStore, events: AlarmHistory | None = None,
        *, max_points: int = 10_000, max_points_per_client: int = 100,
    ) -> None:  # fmt: skip
        super().__init__(iserver)
        self.storage = store
        self._store, self._events = store, events
        self._points: OrderedDict[bytes, tuple[str, _Cursor | EventCursor]] = OrderedDict()  # → owner, cursor
        self._held: Counter[str] = Counter()  # points per client address
        self._max_points, self.points_per_client = max_points, max_points_per_client

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        """Each node's result on its own: asyncua lets an exception fail the whole request, so a
        store that cannot be read (the journal's alarm history, the history file) is the Bad
        status of the nodes that needed it (BadResourceUnavailable), anything else that node's
        BadInternalError, each logged."""
        details = params.HistoryReadDetails
        results = []
        for rv in params.NodesToRead:
            try:
                results.append(await self._read_one(params, details, rv))
            except (JournalUnavailable, sqlite3.Error, OSError) as exc:
                log.error("history_read_failed", node=rv.NodeId.to_string(), reason=str(exc))
                results.append(_bad(ua.StatusCodes.BadResourceUnavailable))
            except Exception:
                log.exception("history_read_failed", node=rv.NodeId.to_string())
                results.append(_bad(ua.StatusCodes.BadInternalError))
        return results

    async def _read_one(
        self, params: ua.HistoryReadParameters, details: Any, rv: ua.HistoryReadValueId
    ) -> ua.HistoryReadResult:
        if params.ReleaseContinuationPoints:
            self._drop(bytes(rv.ContinuationPoint or b""))
            return ua.HistoryReadResult()
        if isinstance(details, ua.ReadEventDetails) and self._events is not None:
            return await self._read_events(details, rv, self._events)
        if not isinstance(details, ua.ReadRawModifiedDetails) or details.IsReadModified:
            return _bad(ua.StatusCodes.BadHistoryOperationUnsupported)
        return await self._read_raw(details, rv)

    async def _read_raw(
        self, details: ua.ReadRawModifiedDetails, rv: ua.HistoryReadValueId
    ) -> ua.HistoryReadResult:
        if rv.ContinuationPoint:
            if (cursor := self._taken(rv, _Cursor)) is None:
                return _bad(ua.StatusCodes.BadContinuationPointInvalid)
        else:
            key = self._store.key(rv.NodeId.to_string())
            if key is None:
                return _bad(ua.StatusCodes.BadHistoryOperationUnsupported)
            cursor = _first(rv.NodeId, key, details)
        values, last = await self._store.read_page(
            cursor.key, cursor.low, cursor.high, cursor.ascending, cursor.per_page + 1, cursor.after
        )
        result = ua.HistoryReadResult()
        result.HistoryData = ua.HistoryData()
        if len(values) > cursor.per_page:
            values = values[: cursor.per_page]
            going_on = dataclasses.replace(cursor, after=last[cursor.per_page - 1])
            result.ContinuationPoint = self._keep(going_on)
        result.HistoryData.DataValues = values
        return result

    async def _read_events(
        self, details: ua.ReadEventDetails, rv: ua.HistoryReadValueId, events: AlarmHistory
    ) -> ua.HistoryReadResult:
        if rv.ContinuationPoint:
            if (cursor := self._taken(rv, EventCursor)) is None:
                return _bad(ua.StatusCodes.BadContinuationPointInvalid)
        else:
            alarms = events.alarms_of(rv.NodeId)
            if alarms is None:
                return _bad(ua.StatusCodes.BadHistoryOperationUnsupported)
            if details.Filter is None or not details.Filter.SelectClauses:
                return _bad(ua.StatusCodes.BadEventFilterInvalid)
            low, high, ascending, per_page = _bounds(details)
            per_page = min(per_page, MAX_EVENTS_PER_PAGE)
            cursor = EventCursor(rv.NodeId, alarms, low, high, ascending, per_page, 0 if ascending else 2**62)
        found, after = await events.page(cursor, details.Filter)
        result = ua.HistoryReadResult()
        result.HistoryData = ua.HistoryEvent(Events=found)
        if after is not None:
            result.ContinuationPoint = self._keep(dataclasses.replace(cursor, after=after))
        return result

    def _taken(self, rv: ua.HistoryReadValueId, kind: type[C]) -> C | None:
        """The cursor `rv`'s continuation point names (used up), if it is a `kind` of this node."""
        cursor = self._drop(bytes(rv.ContinuationPoint))
        return cursor if isinstance(cursor, kind) and cursor.node == rv.NodeId else None

    def _keep(self, cursor: _Cursor | EventCursor) -> bytes:
        """A continuation point for `cursor`: past its client's share, that client's oldest is
        dropped (not another client's); past `max_points` in all, the oldest."""
        client = address_of(str(current_channel.get() or ""))
        if self._held[client] >= self.points_per_client:
            self._drop(next(token for token, (owner, _) in self._points.items() if owner == client))
        token = os.urandom(16)
        self._points[token] = (client, cursor)
        self._held[client] += 1
        while len(self._points) > self._max_points:
            self._drop(next(iter(self._points)))
        return token

    def _drop(self, token: bytes) -> _Cursor | EventCursor | None:
        """The cursor `token` names, forgotten (None if it names none)."""
        entry = self._points.pop(token, None)
        if entry is None:
            return None
        client, cursor = entry
        self._held[client] -= 1
        if self._held[client] <= 0:
            del self._held[client]
        return cursor


def _first(node: ua.NodeId, key: int, details: ua.ReadRawModifiedDetails) -> _Cursor:
    low, high, ascending, per_page = _bounds(details)
    return _Cursor(node, key, low, high, ascending, per_page, float("-inf") if ascending else float("inf"))


def _bounds(details: ua.ReadRawModifiedDetails | ua.ReadEventDetails) -> tuple[float, float, bool, int]:
    """Low, high, which way, and a page's size. Part 11 6.4.3: a start and no end reads forward, an
    end and no start backward; a start after the end reads backward from the start."""
    start, end = _seconds(details.StartTime), _seconds(details.EndTime)
    ascending = start is not None or end is None
    low = start if start is not None else 0.0
    high = end if end is not None else time.time() + 86400
    if start is not None and end is not None and start > end:
        low, high, ascending = end, start, False
    wanted = details.NumValuesPerNode or MAX_VALUES_PER_PAGE
    return low, high, ascending, min(wanted, MAX_VALUES_PER_PAGE)


def _seconds(at: datetime | None) -> float | None:
    """A time bound, or None where the client left it unset (null or MinDateTime)."""
    if at is None:
        return None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return None if at <= NO_TIME else at.timestamp()


def _bad(code: int) -> ua.HistoryReadResult:
    result = ua.HistoryReadResult()
    result.StatusCode = ua.StatusCode(code)
    return result
