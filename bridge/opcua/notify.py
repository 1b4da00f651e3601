"""Cheaper data-change notification for asyncua's monitored items.

For every monitored item asyncua deep-copies each DataValue it is told of (to guard against a
writer that changes the value object afterwards): at thousands of telemetry values a second that
copy is the largest single cost of publishing. The face never changes a DataValue once written,
and a scalar value cannot be changed at all, so here each monitored item keeps the DataValue
itself when its value is an immutable scalar; arrays and structures are still copied. Filters,
deadbands and queues are asyncua's, unchanged (but for the null value after an outage, below).

asyncua creates the per-item value holder itself; this server's subscription service is wrapped
so each new monitored item gets the sharing holder instead, and each subscription a leaner
notification callback (below). Both read asyncua 2.1's monitored-item internals (pinned <2.2).
"""

from __future__ import annotations

import copy
from datetime import datetime
from enum import Enum
from typing import Any

from asyncua import Server, ua
from asyncua.server.monitored_item_service import MonitoredItemValues

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
    """asyncua's MonitoredItemService.datachange_callback, step for step, but building each
    notification with its value at once: asyncua first builds an empty one, whose default
    DataValue guesses a Variant type, and then replaces it (a tenth of the publishing cost)."""
    original = items.datachange_callback

    async def datachange_callback(
        handle: int, value: ua.DataValue, error: ua.StatusCode | None = None
    ) -> None:
        if error:
            await original(handle, value, error)
            return
        mid = items._monitored_datachange[handle]
        mdata = items._monitored_items[mid]
        if mdata.mode == _DISABLED:
            return
        mdata.mvalue.set_current_datavalue(value)
        if mdata.filter:
            passes = items._is_data_changed(
                mdata.mvalue, mdata.filter.Trigger
            ) and items._is_deadband_exceeded(mdata.mvalue, mdata.filter)
        else:
            passes = items._is_data_changed(mdata.mvalue, _STATUS_VALUE)
        if passes:
            event = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=value)
            await items.isub.enqueue_datachange_event(mid, event, mdata.queue_size)

    return datachange_callback


_DISABLED = ua.MonitoringMode.Disabled
_STATUS_VALUE = ua.DataChangeTrigger.StatusValue


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
            for item in subscription.monitored_item_srv._monitored_items.values():
                if type(item.mvalue) is MonitoredItemValues:
                    shared = SharedValues()
                    shared.current_dvalue, shared.old_dvalue = (
                        item.mvalue.current_dvalue,
                        item.mvalue.old_dvalue,
                    )
                    item.mvalue = shared
        return results

    service.create_monitored_items = created
