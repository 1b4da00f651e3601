"""The compiled block decoders agree with the codec, for every type, byte and word order, scale,
enum table and word (property-based), and judge values as `codec.assess` does."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import CodecError
from bridge.mapping import codec
from bridge.mapping.blocks import plan_blocks
from bridge.mapping.decoders import block_decoder, field_decoder
from bridge.mapping.fields import RegisterField

ORDERS = st.sampled_from([None, "big", "little"])
NUMERIC = ["int16", "uint16", "int32", "uint32", "float32", "float64"]


@st.composite
def fields(draw) -> RegisterField:
    kind = draw(st.sampled_from([*NUMERIC, "enum", "bool", "string"]))
    spec: dict = {"address": 0, "type": kind, "byte_order": draw(ORDERS), "word_order": draw(ORDERS)}
    if kind == "enum":
        codes = draw(st.lists(st.integers(0, 65535), min_size=1, max_size=5, unique=True))
        spec["values"] = {f"v{i}": code for i, code in enumerate(codes)}
    elif kind == "string":
        spec["length"] = draw(st.integers(1, 4))
    elif kind in NUMERIC and draw(st.booleans()):
        spec["scale"] = draw(st.sampled_from([0.1, 0.01, 2.0, -1.0]))
        spec["offset"] = draw(st.sampled_from([0.0, -40.0, 273.15]))
    return RegisterField(**spec)


def same(a, b) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


@given(f=fields(), data=st.data())
def test_a_field_decoder_agrees_with_the_codec(f, data):
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=f.register_count, max_size=f.register_count))
    try:
        expected = codec.decode(f, words)
    except CodecError as exc:
        with pytest.raises(CodecError, match=re.escape(str(exc))):
            field_decoder(f)(words)
        return
    got = field_decoder(f)(words)
    assert same(got, expected), (f, words, got, expected)
    assert type(got) is type(expected)


@given(
    lows=st.lists(st.floats(-1000, 1000), min_size=3, max_size=3),
    words=st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8),
)
def test_a_block_decoder_judges_values_as_the_codec_does(lows, words):
    specs = {
        "a": RegisterField(address=10, type="int16", min=lows[0], max=lows[0] + 100, scale=0.1),
        "b": RegisterField(address=11, type="float32", min=lows[1], max=lows[1] + 500),
        "c": RegisterField(address=13, type="enum", values={"x": 1, "y": 2}),
        "d": RegisterField(address=14, type="uint32", min=0, max=70000 + abs(lows[2])),
        "e": RegisterField(address=16, type="uint16"),
    }
    (block,) = plan_blocks(specs.items(), max_gap=8)
    assert_judged_as_the_codec(block, specs, words[: block.count])


def laid_out(data, vary) -> tuple:
    """One to six drawn fields (each as `vary(field)` makes it) one after another in one block,
    with small gaps, and words for the whole block."""
    specs: dict[str, RegisterField] = {}
    address = 100
    for i in range(data.draw(st.integers(1, 6))):
        f = vary(data.draw(fields()))
        specs[f"f{i}"] = f.model_copy(update={"address": address})
        address += f.register_count + data.draw(st.integers(0, 2))
    (block,) = plan_blocks(specs.items(), max_gap=8)
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count))
    return block, specs, words


@given(data=st.data())
def test_a_generated_block_decoder_agrees_with_the_codec_field_by_field(data):
    """Any mix of types, orders, scales and ranges laid out in one block, any words."""

    def bounded(f: RegisterField) -> RegisterField:
        bounds = data.draw(st.sampled_from([(None, None), (0.0, 100.0), (-50.0, None), (None, 1e6)]))
        if f.is_numeric and bounds != (None, None):
            return f.model_copy(update={"min": bounds[0], "max": bounds[1]})
        return f

    assert_judged_as_the_codec(*laid_out(data, bounded))


@given(data=st.data())
def test_given_the_last_words_a_decoder_decodes_just_the_fields_whose_words_changed(data):
    """The same words decode to the same value and doubt, so a poll need only decode what moved."""

    def longer(f: RegisterField) -> RegisterField:
        if f.type == "string" and data.draw(st.booleans()):
            return f.model_copy(update={"length": 10})  # five words: compared as a slice
        return f

    block, specs, words = laid_out(data, longer)
    moved = data.draw(st.sets(st.integers(0, block.count - 1)))
    last = [(w + 1) % 0x10000 if i in moved else w for i, w in enumerate(words)]
    decode = block_decoder(block)
    values, doubts = decode(words)
    changed = {name for name, f in specs.items() if block.slice_for(f, words) != block.slice_for(f, last)}
    again, _ = decode(words, None)  # no last words: all of them
    assert again.keys() == values.keys()
    assert all(same(again[n], v) for n, v in values.items())
    got, got_doubts = decode(words, last)
    assert got.keys() == changed
    assert all(same(got[n], values[n]) for n in changed)
    assert got_doubts == {n: d for n, d in doubts.items() if n in changed}


def test_bits_given_the_last_ones_are_just_those_that_changed():
    specs = {
        "on": RegisterField(table="coil", address=3, type="bool"),
        "off": RegisterField(table="coil", address=5, type="bool"),
    }
    (block,) = plan_blocks(specs.items(), max_gap=8)
    assert block_decoder(block)([True, False, False], [False, False, False]) == ({"on": True}, {})


def assert_judged_as_the_codec(block, specs: dict[str, RegisterField], words: list[int]) -> None:
    """The block decoder gives each field the codec's value (and type), or the codec's error as a
    bad doubt, and judges each value as `codec.assess` does."""
    values, doubts = block_decoder(block)(words)
    for name, f in specs.items():
        try:
            expected = codec.decode(f, block.slice_for(f, words))
        except CodecError as exc:
            reason = str(exc)
        else:
            reason = None
        if reason is not None:
            assert values[name] is None
            assert doubts[name] == codec.Doubt(True, reason)
            continue
        assert same(values[name], expected), (f, values[name])
        assert type(values[name]) is type(expected), (f, values[name])
        assert doubts.get(name) == codec.assess(f, expected), (f, values[name])


def test_a_word_outside_16_bits_is_that_values_doubt():
    specs = {
        "a": RegisterField(address=0, type="uint16"),
        "b": RegisterField(address=1, type="int16", scale=0.5),
    }
    (block,) = plan_blocks(specs.items(), max_gap=8)
    values, doubts = block_decoder(block)([70000, 65535])
    assert values == {"a": None, "b": -0.5}
    assert doubts == {"a": codec.Doubt(True, "register words must be 0..65535, got [70000]")}


def test_bits_are_bools():
    specs = {
        "on": RegisterField(table="coil", address=3, type="bool"),
        "off": RegisterField(table="coil", address=5, type="bool"),
    }
    (block,) = plan_blocks(specs.items(), max_gap=8)
    values, doubts = block_decoder(block)([False, True, False])
    assert (values, doubts) == ({"on": False, "off": False}, {})
