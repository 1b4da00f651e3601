"""The register codec: fixed wire vectors, round trips for every type and order, clear errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from bridge.errors import CodecError
from bridge.mapping.codec import decode, encode
from bridge.mapping.fields import RegisterField
from bridge.mapping.vocabulary import INTEGER_RANGE

ORDERS = st.sampled_from(["big", "little"])


def field(type_: str, **kw) -> RegisterField:
    return RegisterField(address=0, type=type_, **kw)


@pytest.mark.parametrize(
    ("type_", "value", "byte_order", "word_order", "words"),
    [
        ("float32", 123.456, "big", "big", [0x42F6, 0xE979]),
        ("float32", 123.456, "big", "little", [0xE979, 0x42F6]),
        ("float32", 123.456, "little", "big", [0xF642, 0x79E9]),
        ("float32", 123.456, "little", "little", [0x79E9, 0xF642]),
        ("int16", -2, "big", "big", [0xFFFE]),
        ("uint16", 0x1234, "little", "big", [0x3412]),
        ("int32", -305419896, "big", "big", [0xEDCB, 0xA988]),
        ("uint32", 0x12345678, "big", "little", [0x5678, 0x1234]),
        ("float64", 1.0, "big", "big", [0x3FF0, 0, 0, 0]),
        ("float64", 1.0, "big", "little", [0, 0, 0, 0x3FF0]),
    ],
)
def test_fixed_wire_vectors(type_, value, byte_order, word_order, words):
    f = field(type_, byte_order=byte_order, word_order=word_order)
    assert encode(f, value) == words
    decoded = decode(f, words)
    assert decoded == pytest.approx(value, rel=1e-6)


def test_string_is_bytes_in_order_nul_padded():
    f = field("string", length=3)
    assert encode(f, "ABC") == [0x4142, 0x4300, 0x0000]
    assert decode(f, [0x4142, 0x4300, 0x0000]) == "ABC"
    swapped = field("string", length=2, byte_order="little", word_order="little")
    assert encode(swapped, "ABCD") == [0x4241, 0x4443]  # word order does not apply to text


def test_scale_and_offset_give_engineering_units():
    f = field("int16", scale=0.1, offset=-40)
    assert encode(f, 21.5) == [615]
    assert decode(f, [615]) == pytest.approx(21.5)


def test_enum_and_bool():
    f = field("enum", values={"idle": 0, "busy": 1})
    assert encode(f, "busy") == [1]
    assert decode(f, [0]) == "idle"
    assert encode(field("bool"), True) == [1]
    assert decode(field("bool"), [0]) is False


@pytest.mark.parametrize(
    ("f", "value", "message"),
    [
        (field("uint16"), 70000, "does not fit uint16"),
        (field("uint16"), -1, "does not fit uint16"),
        (field("uint16", min=1, max=3), 4, "above the maximum 3"),
        (field("float32", min=1.0), 0.5, "below the minimum 1"),
        (field("float32"), math.nan, "not a finite number"),
        (field("int32"), "12", "needs a number"),
        (field("uint16"), True, "needs a number"),
        (field("string", length=2), "ABCDE", "5 characters do not fit 2 registers"),
        (field("string", length=2), "é", "not ASCII"),
        (field("enum", values={"a": 1}), "b", "'b' is not one of a"),
        (field("bool"), 1, "bool needs true or false"),
    ],
)
def test_encode_refuses_what_does_not_fit(f, value, message):
    with pytest.raises(CodecError, match=message):
        encode(f, value)


@pytest.mark.parametrize(
    ("f", "words", "message"),
    [
        (field("bool"), [7], "expected 0 or 1"),
        (field("enum", values={"a": 1}), [9], "enum code 9"),
        (field("uint32"), [1], "needs 2 registers"),
        (field("string", length=1), [0xC3A9], "non-ASCII"),
        (field("uint16"), [70000], "0..65535"),
    ],
)
def test_decode_refuses_garbage(f, words, message):
    with pytest.raises(CodecError, match=message):
        decode(f, words)


@given(type_=st.sampled_from(sorted(INTEGER_RANGE)), data=st.data(), bo=ORDERS, wo=ORDERS)
def test_integer_round_trip(type_, data, bo, wo):
    low, high = INTEGER_RANGE[type_]
    value = data.draw(st.integers(low, high))
    f = field(type_, byte_order=bo, word_order=wo)
    words = encode(f, value)
    assert len(words) == f.register_count
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(f, words) == value


@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False), bo=ORDERS, wo=ORDERS)
def test_float32_round_trip(value, bo, wo):
    f = field("float32", byte_order=bo, word_order=wo)
    assert decode(f, encode(f, value)) == value


@given(value=st.floats(allow_nan=False, allow_infinity=False), bo=ORDERS, wo=ORDERS)
def test_float64_round_trip(value, bo, wo):
    f = field("float64", byte_order=bo, word_order=wo)
    assert decode(f, encode(f, value)) == value


@given(
    text=st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=16),
    bo=ORDERS,
    wo=ORDERS,
)
def test_string_round_trip(text, bo, wo):
    f = field("string", length=8, byte_order=bo, word_order=wo)
    assert decode(f, encode(f, text)) == text


@given(raw=st.integers(-32768, 32767), bo=ORDERS, wo=ORDERS)
def test_scaled_round_trip(raw, bo, wo):
    f = field("int16", scale=0.1, offset=-40, byte_order=bo, word_order=wo)
    value = raw * 0.1 - 40
    assert decode(f, encode(f, value)) == pytest.approx(value, abs=1e-9)


_PYMODBUS = {
    "int16": ModbusTcpClient.DATATYPE.INT16,
    "uint16": ModbusTcpClient.DATATYPE.UINT16,
    "int32": ModbusTcpClient.DATATYPE.INT32,
    "uint32": ModbusTcpClient.DATATYPE.UINT32,
    "float32": ModbusTcpClient.DATATYPE.FLOAT32,
    "float64": ModbusTcpClient.DATATYPE.FLOAT64,
}


@given(type_=st.sampled_from(sorted(_PYMODBUS)), data=st.data(), wo=ORDERS)
def test_big_byte_order_matches_pymodbus(type_, data, wo):
    """pymodbus's own conversion is the reference for the usual (big-endian bytes) wire format."""
    if type_ in INTEGER_RANGE:
        value = data.draw(st.integers(*INTEGER_RANGE[type_]))
    else:
        width = 32 if type_ == "float32" else 64
        value = data.draw(st.floats(width=width, allow_nan=False, allow_infinity=False))
    ours = encode(field(type_, word_order=wo), value)
    theirs = ModbusTcpClient.convert_to_registers(value, _PYMODBUS[type_], word_order=wo)
    assert ours == theirs
