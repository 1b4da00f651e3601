"""The fast data-change encoding is byte for byte asyncua's own, for every scalar type, null and
Bad values, arrays, strings, timestamps and picoseconds (property-based), and asyncua's decoder
reads it back; a value that does not fit its type fails as asyncua's encoder fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua import ua_binary
from hypothesis import given
from hypothesis import strategies as st

from bridge.opcua import wire
from bridge.opcua.notify import data_value, scalar_variant

VT = ua.VariantType
INTS = {
    VT.SByte: (-(2**7), 2**7 - 1), VT.Byte: (0, 2**8 - 1), VT.Int16: (-(2**15), 2**15 - 1),
    VT.UInt16: (0, 2**16 - 1), VT.Int32: (-(2**31), 2**31 - 1), VT.UInt32: (0, 2**32 - 1),
    VT.Int64: (-(2**63), 2**63 - 1), VT.UInt64: (0, 2**64 - 1),
}  # fmt: skip
TIMES = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1500, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),  # naive
)


@st.composite
def variants(draw) -> ua.Variant | None:
    kind = draw(st.sampled_from(["int", "float", "double", "bool", "string", "null", "array", "none"]))
    if kind == "int":
        vtype, (low, high) = draw(st.sampled_from(sorted(INTS.items())))
        return scalar_variant(draw(st.integers(low, high)), vtype)
    if kind == "float":
        return scalar_variant(draw(st.floats(width=32)), VT.Float)
    if kind == "double":
        return ua.Variant(draw(st.floats()), VT.Double)
    if kind == "bool":
        return ua.Variant(draw(st.booleans()), VT.Boolean)
    if kind == "string":
        return ua.Variant(draw(st.one_of(st.none(), st.text(max_size=20))), VT.String)
    if kind == "array":
        return ua.Variant(draw(st.lists(st.integers(0, 65535), max_size=5)), VT.UInt16)
    return ua.Variant() if kind == "null" else None


@st.composite
def data_values(draw) -> ua.DataValue:
    status = draw(st.sampled_from([None, 0, ua.StatusCodes.BadCommunicationError, 0x40920000]))
    return ua.DataValue(
        draw(variants()),
        StatusCode=None if status is None else ua.StatusCode(status),
        SourceTimestamp=draw(TIMES),
        ServerTimestamp=draw(TIMES),
        SourcePicoseconds=draw(st.one_of(st.none(), st.integers(0, 9999))) if draw(st.booleans()) else None,
    )


def asyncua_bytes(notification: ua.DataChangeNotification) -> bytes:
    return wire._original(ua.DataChangeNotification)(notification)


@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), data_values()), max_size=8),
    st.sampled_from([[], None]),
)
def test_equal_to_asyncua(items: list, infos: list | None) -> None:
    notification = ua.DataChangeNotification(
        MonitoredItems=[ua.MonitoredItemNotification(ClientHandle=h, Value=v) for h, v in items],
        DiagnosticInfos=infos,
    )
    encoded = wire.encode_data_change(notification)
    assert encoded == asyncua_bytes(notification)
    decoded = ua_binary.struct_from_binary(ua.DataChangeNotification, Buffer(encoded))
    assert [item.ClientHandle for item in decoded.MonitoredItems] == [h for h, _ in items]


def test_shared_timestamps_encode_once_and_stay_equal() -> None:
    at = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
    values = [
        ua.DataValue(scalar_variant(i, VT.UInt16), ua.StatusCode(0), at, at + timedelta(milliseconds=i))
        for i in range(50)
    ]
    notification = ua.DataChangeNotification(
        MonitoredItems=[ua.MonitoredItemNotification(ClientHandle=i, Value=v) for i, v in enumerate(values)]
    )
    assert wire.encode_data_change(notification) == asyncua_bytes(notification)


@pytest.mark.parametrize(
    "variant",
    [
        ua.Variant(1.5, VT.Int32, is_array=False),  # a float where an integer is declared
        ua.Variant(2**40, VT.UInt16, is_array=False),  # out of the type's range
        ua.Variant(1e300, VT.Float, is_array=False),  # too large for a float32
    ],
)
@pytest.mark.parametrize("stamped", [False, True])  # with both timestamps: the one-pack path first
def test_a_value_that_does_not_fit_fails_as_asyncua_fails(variant: ua.Variant, stamped: bool) -> None:
    at = datetime(2026, 11, 25, 16, 0, tzinfo=UTC) if stamped else None
    value = ua.DataValue(variant, ua.StatusCode(0), SourceTimestamp=at, ServerTimestamp=at)
    notification = ua.DataChangeNotification(
        MonitoredItems=[ua.MonitoredItemNotification(ClientHandle=1, Value=value)]
    )
    with pytest.raises(ua.UaError) as ours:
        wire.encode_data_change(notification)
    with pytest.raises(ua.UaError) as theirs:
        asyncua_bytes(notification)
    assert str(ours.value) == str(theirs.value)


def test_install_routes_only_data_changes() -> None:
    wire.install()
    wire.install()  # idempotent
    assert ua_binary.create_dataclass_serializer(ua.DataChangeNotification) is wire.encode_data_change
    event = ua.EventFieldList(ClientHandle=3, EventFields=[ua.Variant("x")])
    assert ua_binary.struct_to_binary(event) == wire._original(ua.EventFieldList)(event)


@given(st.sampled_from(sorted(INTS)), st.integers(0, 127), TIMES, TIMES)
def test_lean_constructors_equal_asyncuas(vtype: ua.VariantType, value: int, source, server) -> None:
    variant = scalar_variant(value, vtype)
    assert variant == ua.Variant(value, vtype)
    status = ua.StatusCode(0)
    built = data_value(variant, status, source, server)
    assert built == ua.DataValue(variant, StatusCode=status, SourceTimestamp=source, ServerTimestamp=server)
    assert wire.encode_data_value(built) == wire._original(ua.DataValue)(built)
