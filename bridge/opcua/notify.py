"""Cheaper data-change notification for asyncua's monitored items.

For every monitored item asyncua deep-copies each DataValue it is told of (to guard against a
writer that changes the value object afterwards): at thousands of telemetry values a second that
copy is the largest single cost of publishing. The face never changes a DataValue once written,
and a scalar value cannot be changed at all, so here each monitored item keeps the DataValue
itself when its value is an immutable scalar; arrays and structures are still copied. Filters,
deadbands and queues are asyncua's, unchanged (but for the null value after an outage, below).

asyncua creates the per-item value holder itself; this server's subscription service is wrapped
so each new monitored item gets the sharing holder instead, and each subscription a leaner
notification callback (below). Both read asyncua's monitored-item internals, through
asyncua_seams (the pinned version's names, checked at start-up).
"""

from __future__ import annotations

import copy
from datetime import datetime
from enum import Enum
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.server.address_space import AddressSpace
from asyncua.server.monitored_item_service import MonitoredItemValues

from bridge.opcua import asyncua_seams as seams

log = structlog.get_logger(__name__)

Writes = list[tuple[ua.NodeId, Any, ua.DataValue]]  # node, its value attribute or None, the value

_IMMUTABLE = (bool, int, float, str, bytes, datetime, Enum, type(None))


class SharedValues(MonitoredItemValues):  # type: ignore[misc]
    def set_current_datavalue(self, cur_val: ua.DataValue) -> None:
        self.old_dvalue = self.current_dvalue
        variant = cur_val.Value
        if variant is None or (not variant.is_array and isinstance(variant.Value, _IMMUTABLE)):
            self.current_dvalue = cur_val
        else:
            self.current_dvalue = copy.deepcopy(cur_val)

    def get_old_datavalue(self) -> ua.DataValue | None:
        """No old value when it was null (a Bad status withholds it) and the new one is not:
        asyncua's absolute deadband check would otherwise subtract None and drop the first good
        value after an outage, which a client with a deadband filter then never sees."""
        old, new = self.old_dvalue, self.current_dvalue
        if old is not None and new is not None and _null(old) and not _null(new):
            return None
        return old


def _lean_callback(items: Any) -> Any:
    """asyncua's MonitoredItemService.datachange_callback, step for step (`_notify`), but building
    each notification with its value at once: asyncua first builds an empty one, whose default
    DataValue guesses a Variant type, and then replaces it (a tenth of the publishing cost)."""
    original = items.datachange_callback

    async def datachange_callback(
        handle: int, value: ua.DataValue, error: ua.StatusCode | None = None
    ) -> None:
        if error:
            await original(handle, value, error)
            return
        isub = _notify(items, handle, value)
        if isub is not None:
            await seams.trigger_publish(isub)

    datachange_callback.items = items  # type: ignore[attr-defined]  # write_values notifies in place
    return datachange_callback


def _notify(items: Any, handle: int, value: ua.DataValue) -> Any:
    """Queue one monitored item's notification if it passes the item's filter; returns the
    subscription when its queue for this item was empty (asyncua then triggers a publish)."""
    by_handle, by_id = seams.item_tables(items)
    mid = by_handle[handle]
    mdata = by_id[mid]
    if mdata.mode == _DISABLED:
        return None
    mvalue = mdata.mvalue
    if mdata.filter or type(mvalue) is not SharedValues:
        mvalue.set_current_datavalue(value)
        is_changed, beyond_deadband = seams.item_filters(items)
        if mdata.filter:
            passes = is_changed(mvalue, mdata.filter.Trigger) and beyond_deadband(mvalue, mdata.filter)
        else:
            passes = is_changed(mvalue, _STATUS_VALUE)
    else:
        passes = _unfiltered_change(mvalue, value)
    if not passes:
        return None
    event = _new(_NOTIFICATION)  # its __init__ only sets these two
    event.ClientHandle, event.Value = mdata.client_handle, value
    isub = items.isub  # InternalSubscription._enqueue_event, without its await chain
    queue = seams.triggered_datachanges(isub)
    pending = queue.get(mid)
    if pending is None:
        queue[mid] = [event]
        return isub
    if mdata.queue_size and len(pending) >= mdata.queue_size:
        pending.pop(0)
    pending.append(event)
    return None


def _unfiltered_change(mvalue: SharedValues, value: ua.DataValue) -> bool:
    """`mvalue.set_current_datavalue(value)`, then asyncua's `_is_data_changed(mvalue, StatusValue)`,
    the test of an item without a filter (the usual subscriber), decided without its calls and its
    comparisons of whole dataclasses (tests/unit/test_notify.py holds the two equal)."""
    old = mvalue.current_dvalue
    mvalue.set_current_datavalue(value)
    variant = value.Value
    if old is None or (old.StatusCode is not value.StatusCode and old.StatusCode != value.StatusCode):
        return True
    # Variant.__ne__ (a null old value is always unlike a non-null new one, as get_old_datavalue wants)
    was = old.Value
    if was is None or variant is None:
        return was is not variant
    return was.VariantType != variant.VariantType or was.Value != variant.Value


async def write_values(aspace: AddressSpace, writes: Writes) -> None:
    """A scan's values into the address space at once, notifying every monitored item as asyncua's
    AddressSpace.write_attribute_value would, but with one publish trigger per subscription
    instead of five awaits per value and item (measured in docs/telemetry.md).

    Each write names its node's value attribute when the caller has it (`value_attribute`), or
    None to have it looked up. The caller vouches for what write_attribute_value checks: each
    Variant has the node's DataType and a Bad value is null. A node with a value setter, or a
    monitored item of another kind, goes asyncua's way."""
    touched: dict[int, Any] = {}
    nodes = seams.aspace_nodes(aspace)
    for nodeid, attval, value in writes:
        if attval is None:
            attval = nodes[nodeid].attributes[_VALUE]
        if attval.value_setter is not None:
            await aspace.write_attribute_value(nodeid, _VALUE, value)
            continue
        attval.value = value
        attval.value_callback = None
        callbacks = attval.datachange_callbacks
        if not callbacks:
            continue
        for handle, callback in tuple(callbacks.items()):
            items = getattr(callback, "items", None)
            try:
                if items is None:
                    await callback(handle, value)
                elif (isub := _notify(items, handle, value)) is not None:
                    touched[id(isub)] = isub
            except Exception:  # as asyncua: one item's failure must not stop the others
                log.exception("datachange_notification_failed", handle=handle)
    for isub in touched.values():
        await seams.trigger_publish(isub)


def value_attribute(aspace: AddressSpace, nodeid: ua.NodeId) -> Any:
    """The node's value attribute, to name in writes to `write_values` (it lives as long as the node)."""
    return seams.aspace_nodes(aspace)[nodeid].attributes[_VALUE]


def data_value(
    variant: ua.Variant, status: ua.StatusCode, source: datetime | None, server: datetime | None
) -> ua.DataValue:
    """ua.DataValue(variant, status, source, server) without its __post_init__ check (the variant
    is one already)."""
    value = _new(ua.DataValue)
    value.Encoding, value.Value, value.StatusCode = 0, variant, status
    value.SourceTimestamp, value.ServerTimestamp = source, server
    value.SourcePicoseconds = value.ServerPicoseconds = None
    return value


_VALUE = ua.AttributeIds.Value
_NOTIFICATION = ua.MonitoredItemNotification
_DISABLED = ua.MonitoringMode.Disabled
_STATUS_VALUE = ua.DataChangeTrigger.StatusValue


def scalar_variant(value: Any, vtype: ua.VariantType) -> ua.Variant:
    """ua.Variant(value, vtype) for a scalar of the right Python type, without the checks and
    type guessing of its __post_init__ (a third of the cost of building a notified value)."""
    variant = _new(ua.Variant)
    variant.Value, variant.VariantType, variant.Dimensions, variant.is_array = value, vtype, None, False
    return variant


_new = object.__new__


def _null(value: ua.DataValue) -> bool:
    return value.Value is None or (value.Value.Value is None and not value.Value.is_array)


def share_notified_values(server: Server) -> None:
    service = server.iserver.subscription_service
    create = service.create_monitored_items

    async def created(params: ua.CreateMonitoredItemsParameters) -> Any:
        subscription = service.subscriptions.get(params.SubscriptionId)
        if subscription is not None:  # registered per item from here on: set before they are made
            items = subscription.monitored_item_srv
            if "datachange_callback" not in vars(items):
                items.datachange_callback = _lean_callback(items)
        results = await create(params)
        if subscription is not None:
            for item in seams.item_tables(subscription.monitored_item_srv)[1].values():
                if type(item.mvalue) is MonitoredItemValues:
                    shared = SharedValues()
                    shared.current_dvalue, shared.old_dvalue = (
                        item.mvalue.current_dvalue,
                        item.mvalue.old_dvalue,
                    )
                    item.mvalue = shared
        return results

    service.create_monitored_items = created
