"""Values into the address space, each with the status OPC UA gives it (Part 8), written at once per
batch (notify.write_values) and only when they differ from what the node holds.

Station values carry the time they were read from the PLC as SourceTimestamp and turn
BadCommunicationError while the station does not answer (asyncua then withholds the value, as
OPC UA Part 4 requires with a Bad status; the SourceTimestamp of the last read stays).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import Server, ua

from bridge.domain.model import utcnow
from bridge.mapping import codec
from bridge.opcua.history_store import Row
from bridge.opcua.notify import Writes, data_value, scalar_variant, write_values
from bridge.opcua.uatypes import NO_TIME, ModelTypes, field_variant

_FLOATS = (ua.VariantType.Float, ua.VariantType.Double)
_NULLABLE = (ua.VariantType.String, ua.VariantType.ByteString)
_VALUE = ua.AttributeIds.Value
_NULL = ua.Variant()
_GOOD = ua.StatusCodes.Good
Staged = Writes


@dataclass(frozen=True, slots=True)
class Polled:
    """A polled field and all the scan path needs to publish it."""

    name: str
    field: Any
    path: str
    nid: ua.NodeId
    attval: Any  # the node's value attribute (notify.value_attribute)
    vtype: ua.VariantType
    vtype_code: int  # vtype.value, as history rows store it
    is_float: bool
    codes: dict[Any, int] | None  # an enum's name → code
    deadband: float
    history_key: int | None


class ValueWriter:
    """Writes the line's values; remembers what it last wrote to the nodes that are written by
    exception (station values), so an unchanged value costs a comparison, not a notification."""

    def __init__(self, server: Server, ns: int, types: ModelTypes) -> None:
        self.server, self.ns, self.types = server, ns, types
        self.aspace = server.iserver.aspace
        self._nids: dict[str, ua.NodeId] = {}  # the plant's own nodes, not the orders' (they go)
        self._published: dict[str, tuple[Any, int]] = {}  # node path → value and status last written

    def nid(self, path: str) -> ua.NodeId:
        """The NodeId of a plant node, kept: station values are written thousands of times a second."""
        nodeid = self._nids.get(path)
        if nodeid is None:
            nodeid = self._nids[path] = ua.NodeId(path, self.ns)
        return nodeid

    def order_nid(self, path: str) -> ua.NodeId:
        """An order's or step's NodeId, not kept: orders leave the address space, their ids with them."""
        return ua.NodeId(path, self.ns)

    def forget(self, path: str) -> None:
        """The next value written to `path` is written whatever it holds."""
        self._published.pop(path, None)

    def set_new(self, nodeid: ua.NodeId, value: ua.DataValue) -> None:
        """The value of a node made this instant, which nobody can be watching yet: no
        notification to send, so no await (on_demand.py builds nodes inside a lookup)."""
        self.aspace[nodeid].attributes[_VALUE].value = value

    def watched(self, nodeid: ua.NodeId) -> bool:
        """Whether a monitored item watches the node's value."""
        attribute = self.aspace[nodeid].attributes.get(_VALUE)
        return attribute is not None and bool(attribute.datachange_callbacks)

    async def flush(self, staged: Staged) -> None:
        if staged:
            await write_values(self.aspace, staged)

    async def write(
        self,
        nodeid: ua.NodeId,
        value: Any,
        vtype: ua.VariantType,
        at: datetime | None = None,
        *,
        status: int = _GOOD,
        staged: Staged | None = None,
    ) -> None:
        """One value to the address space now, or onto `staged`, written at once by `flush`."""
        value_now = value_for(value, vtype, at, status)
        if staged is not None:
            staged.append((nodeid, None, value_now))
        else:  # straight to the address space (what Server.write_attribute_value ends in, two calls down)
            await self.aspace.write_attribute_value(nodeid, _VALUE, value_now)

    async def write_field(
        self,
        path: str,
        f: Any,
        enum: ua.NodeId | None,
        value: Any,
        at: datetime | None,
        *,
        good: bool = True,
        doubt: codec.Doubt | None = None,
        by_exception: float | None = None,
        staged: Staged | None = None,
    ) -> tuple[Any, ua.VariantType, int] | None:
        """A PLC value with its own status: Bad while the PLC is away or when the value is no
        usable value (not finite, undecodable; the last value stays), Uncertain outside the
        mapping's range (the AnalogItem's EURange), as OPC UA Part 8 has it.

        `by_exception` (a deadband, 0 for none): written only if the status changed or the value
        moved beyond the deadband since last written; returns what was written, or None."""
        if doubt is None and value is not None:
            doubt = codec.assess(f, value)
        if value is not None and enum is not None:
            value = self.types.enum_codes[enum].get(value, 0)
        nodeid = self.nid(path)
        if value is None:
            value = (
                await self.server.get_node(nodeid).read_data_value(raise_on_bad_status=False)
            ).Value.Value
        code = _status_of(value, good, doubt)
        last = self._published.get(path)
        if by_exception is not None and last is not None and last[1] == code:
            before = last[0]
            if value == before or (
                by_exception
                and isinstance(value, int | float)
                and isinstance(before, int | float)
                and abs(value - before) <= by_exception
            ):
                return None
        vtype = field_variant(f)
        await self.write(nodeid, value, vtype, at, status=code, staged=staged)
        self._published[path] = (value, code)
        return value, vtype, code

    def stage_good(
        self, entry: Polled, value: Any, at: datetime, now: datetime, staged: Staged, rows: list[Row],
        at_s: float,
    ) -> None:  # fmt: skip
        """`write_field` for a polled value the link found good (in range, decoded), and its
        history row, without the lookups: the scan's hot path (docs/telemetry.md)."""
        if entry.codes is not None:
            value = entry.codes.get(value, 0)
        last = self._published.get(entry.path)
        if last is not None and last[1] == _GOOD:
            before = last[0]
            if value == before or (
                entry.deadband and isinstance(before, int | float) and abs(value - before) <= entry.deadband
            ):
                return
        if entry.is_float:
            value = float(value)
        variant = scalar_variant(value, entry.vtype)
        staged.append((entry.nid, entry.attval, data_value(variant, _GOOD_CODE, at, now)))
        self._published[entry.path] = (value, _GOOD)
        if entry.history_key is not None:
            rows.append((entry.history_key, at_s, value, entry.vtype_code, _GOOD))

    def stage_changed(
        self, staged: Staged, path: str, value: Any, vtype: ua.VariantType, at: datetime | None = None,
        *, good: bool = True,
    ) -> None:  # fmt: skip
        """Onto `staged`, unless the node already holds this value with this status."""
        status = _GOOD if good else ua.StatusCodes.BadCommunicationError
        if self._published.get(path) != (value, status):
            staged.append((self.nid(path), None, value_for(value, vtype, at, status)))
            self._published[path] = (value, status)

    async def mark(self, paths: list[str], code: int) -> None:
        """Give these values a bad status, keeping the last read's timestamp (the value is
        withheld, as a Bad status requires)."""
        for path in paths:
            self.forget(path)
            nodeid = self.nid(path)
            current = await self.server.get_node(nodeid).read_data_value(raise_on_bad_status=False)
            await self.server.write_attribute_value(
                nodeid,
                ua.DataValue(
                    current.Value,
                    StatusCode=ua.StatusCode(code),
                    SourceTimestamp=current.SourceTimestamp,
                    ServerTimestamp=utcnow(),
                ),
            )


def _status_of(value: Any, good: bool, doubt: codec.Doubt | None) -> int:
    if not good:
        return ua.StatusCodes.BadCommunicationError
    if doubt is None:
        return _GOOD if value is not None else ua.StatusCodes.BadCommunicationError
    if not doubt.bad:
        return ua.StatusCodes.UncertainEngineeringUnitsExceeded
    if isinstance(value, float) and not math.isfinite(value):
        return ua.StatusCodes.BadOutOfRange
    return ua.StatusCodes.BadDataEncodingInvalid


def good_value(value: Any, vtype: ua.VariantType) -> ua.DataValue:
    """value_for(value, vtype, None, Good) for a scalar of the node's own type, without the
    Variant's checks (an order's members: written thousands of times a minute)."""
    if value is None:
        if vtype != ua.VariantType.DateTime:
            return value_for(value, vtype, None, _GOOD)
        value = NO_TIME
    elif vtype in _FLOATS:
        value = float(value)
    now = utcnow()
    return data_value(scalar_variant(value, vtype), _GOOD_CODE, now, now)


def value_for(value: Any, vtype: ua.VariantType, at: datetime | None, status: int) -> ua.DataValue:
    if vtype in _FLOATS and isinstance(value, int | float):
        value = float(value)
    # A DateTime with no time yet is MinDateTime (a null one cannot be encoded); a null number has
    # no type: no value yet, or withheld under a Bad status (as asyncua's own write would withhold it).
    if value is None and vtype == ua.VariantType.DateTime:
        value = NO_TIME
    if status & 0x80000000 or (value is None and vtype not in _NULLABLE):
        variant = _NULL
    else:
        variant = ua.Variant(value, vtype)
    now = utcnow()
    return ua.DataValue(
        variant, StatusCode=_status_code(status), SourceTimestamp=at or now, ServerTimestamp=now
    )


@functools.cache
def _status_code(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)  # one object per code: asyncua never changes a StatusCode it is given


_GOOD_CODE = _status_code(_GOOD)
