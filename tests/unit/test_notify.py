"""The monitored items' shortcut for subscribers without a filter decides as asyncua does."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemService

from bridge.opcua.notify import SharedValues, _unfiltered_change

AT = datetime(2026, 1, 1, tzinfo=UTC)
GOOD, BAD = ua.StatusCode(ua.StatusCodes.Good), ua.StatusCode(ua.StatusCodes.BadCommunicationError)
VALUES = [
    ua.DataValue(ua.Variant(1.5, ua.VariantType.Double), StatusCode=GOOD, SourceTimestamp=AT),
    ua.DataValue(ua.Variant(1.5, ua.VariantType.Double), StatusCode=ua.StatusCode(0), SourceTimestamp=AT),
    ua.DataValue(ua.Variant(2.5, ua.VariantType.Double), StatusCode=GOOD, SourceTimestamp=AT),
    ua.DataValue(ua.Variant(2, ua.VariantType.Int32), StatusCode=GOOD, SourceTimestamp=AT),
    ua.DataValue(ua.Variant(None, ua.VariantType.Null), StatusCode=BAD, SourceTimestamp=AT),
    ua.DataValue(ua.Variant(None, ua.VariantType.Null), StatusCode=GOOD, SourceTimestamp=AT),
    ua.DataValue(ua.Variant([1, 2], ua.VariantType.Int32), StatusCode=GOOD, SourceTimestamp=AT),
    ua.DataValue(ua.Variant([1, 3], ua.VariantType.Int32), StatusCode=GOOD, SourceTimestamp=AT),
    ua.DataValue(ua.Variant("x", ua.VariantType.String), StatusCode=BAD, SourceTimestamp=AT),
    ua.DataValue(ua.Variant(float("nan"), ua.VariantType.Double), StatusCode=GOOD, SourceTimestamp=AT),
    ua.DataValue(None, StatusCode=GOOD, SourceTimestamp=AT),
]


def test_the_shortcut_passes_on_exactly_what_asyncuas_trigger_would():
    trigger = ua.DataChangeTrigger.StatusValue
    for history in itertools.product(VALUES, repeat=3):
        asyncuas, ours = SharedValues(), SharedValues()
        for value in history:
            asyncuas.set_current_datavalue(value)
            expected = MonitoredItemService._is_data_changed(asyncuas, trigger)
            assert _unfiltered_change(ours, value) == expected, history
            assert (ours.current_dvalue, ours.old_dvalue) == (asyncuas.current_dvalue, asyncuas.old_dvalue)
