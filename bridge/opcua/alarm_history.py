"""Alarm history as OPC UA Part 11 event history.

HistoryRead with ReadEventDetails on the Server object (every alarm), a station (its alarms) or an
alarm's condition (its own) answers the journal's alarm changes (what `linebridge alarm history`
prints) as the events the condition raised then, each with the fields the client's filter
selects: a SCADA client that was away fills its alarm journal from here instead of losing what
happened meanwhile. Of a where clause only a root OfType or EventType InList is applied (which
alarm types); asyncua's own event history applies none.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from asyncua import Server, ua
from asyncua.common.ua_utils import get_node_supertypes

from bridge.domain.alarm_condition import recorded
from bridge.journal import SqliteJournal
from bridge.opcua.alarm_conditions import TYPES, AlarmConditions

MAX_EVENTS_PER_PAGE = 1_000  # built on the loop: ~50 ms a page, the rest by continuation point
CONDITION_ID = "NodeId"  # the event field a select clause of no path and the NodeId attribute names


@dataclass(frozen=True)
class EventCursor:
    """Where a paged event history read goes on: the changes of `alarms` in [low, high] past row `after`."""

    node: ua.NodeId
    alarms: tuple[str, ...]
    low: float
    high: float
    ascending: bool
    per_page: int
    after: int


class AlarmHistory:
    def __init__(self, server: Server, conditions: AlarmConditions, journal: SqliteJournal) -> None:
        self.server, self.conditions, self.journal = server, conditions, journal
        self._sources = conditions.history_sources()
        self._types = conditions.field_types()
        self._above: dict[ua.NodeId, set[ua.NodeId]] = {}  # each alarm type and every type above it

    async def announce(self) -> None:
        """Tell clients where event history is read: the Server object's EventNotifier has
        HistoryRead, and HistoryServerCapabilities says events may be read."""
        await self.server.get_node(ua.NodeId(ua.ObjectIds.Server)).set_event_notifier(
            [ua.EventNotifier.SubscribeToEvents, ua.EventNotifier.HistoryRead]
        )
        capability = ua.ObjectIds.HistoryServerCapabilities_AccessHistoryEventsCapability
        await self.server.get_node(ua.NodeId(capability)).write_value(True)

    def alarms_of(self, node: ua.NodeId) -> tuple[str, ...] | None:
        """The alarms whose history `node` answers, or None if it keeps no event history."""
        return self._sources.get(node)

    async def page(
        self, cursor: EventCursor, filter_: ua.EventFilter
    ) -> tuple[list[ua.HistoryEventFieldList], int | None]:
        """One page of events in the filter's form, and the row to go on after if there is more."""
        rows = await self.journal.run(
            self.journal.alarm_page, cursor.alarms, cursor.low, cursor.high, cursor.ascending,
            cursor.per_page + 1, cursor.after,
        )  # fmt: skip
        more = rows[cursor.per_page - 1]["id"] if len(rows) > cursor.per_page else None
        wanted = await self._of_types(filter_.WhereClause)
        events = []
        for row in rows[: cursor.per_page]:
            fields = self._event(row)
            if wanted is None or fields["EventType"] in wanted:
                selected = self._select(fields, filter_.SelectClauses)
                events.append(ua.HistoryEventFieldList(EventFields=selected))
        return events, more

    def _event(self, row: Mapping[str, Any]) -> dict[str, Any]:
        state = recorded(self.conditions.definition(row["alarm"]), row)
        event_id = f"linebridge-alarm-history-{row['id']}".encode()
        return self.conditions.event_as_of(state) | {"EventId": event_id}

    def _select(
        self, fields: Mapping[str, Any], clauses: Collection[ua.SimpleAttributeOperand]
    ) -> list[ua.Variant]:
        types, selected = self._types, []
        for clause in clauses:
            key = "/".join(name.Name for name in clause.BrowsePath)
            if not key and clause.AttributeId == ua.AttributeIds.NodeId:
                key = CONDITION_ID
            value, vtype = fields.get(key), types.get(key)
            selected.append(ua.Variant() if value is None or vtype is None else ua.Variant(value, vtype))
        return selected

    async def _of_types(self, where: ua.ContentFilter | None) -> set[ua.NodeId] | None:
        """The alarm types the where clause lets through: its root element OfType (a type and its
        subtypes) or EventType InList (the types listed, as asyncua's clients ask); None: no
        such element, every event passes."""
        root = where.Elements[0] if where is not None and where.Elements else None
        if root is None or not root.FilterOperands:
            return None
        literals = {  # the types named (anything else a literal holds names none)
            op.Value.Value for op in root.FilterOperands
            if isinstance(op, ua.LiteralOperand) and isinstance(op.Value.Value, ua.NodeId)
        }  # fmt: skip
        ours = {ua.NodeId(kind) for kind in TYPES.values()}
        if root.FilterOperator == ua.FilterOperator.InList:
            subject = root.FilterOperands[0]
            is_event_type = isinstance(subject, ua.SimpleAttributeOperand) and [
                name.Name for name in subject.BrowsePath
            ] == ["EventType"]
            return ours & literals if is_event_type else None
        if root.FilterOperator != ua.FilterOperator.OfType:
            return None
        passing = set()
        for kind in ours:
            if kind not in self._above:
                above = await get_node_supertypes(self.server.get_node(kind), True, False)
                self._above[kind] = {node.nodeid for node in above}
            if self._above[kind] & literals:
                passing.add(kind)
        return passing
