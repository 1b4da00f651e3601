"""Cheaper data-change notification for asyncua's monitored items.

For every monitored item asyncua deep-copies each DataValue it is told of (to guard against a
writer that changes the value object afterwards): at thousands of telemetry values a second that
copy is the largest single cost of publishing. The face never changes a DataValue once written,
and a scalar value cannot be changed at all, so here each monitored item keeps the DataValue
itself when its value is an immutable scalar; arrays and structures are still copied. Filters,
deadbands and queues are asyncua's, unchanged (but for the null value after an outage, below).

asyncua creates the per-item value holder itself; this server's subscription service is wrapped
so each new monitored item gets the sharing holder instead.
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


def _null(value: ua.DataValue) -> bool:
    return value.Value is None or (value.Value.Value is None and not value.Value.is_array)


def share_notified_values(server: Server) -> None:
    service = server.iserver.subscription_service
    create = service.create_monitored_items

    async def created(params: ua.CreateMonitoredItemsParameters) -> Any:
        results = await create(params)
        subscription = service.subscriptions.get(params.SubscriptionId)
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
