"""Register blocks decoded by functions built once from the mapping (pure).

`codec.decode` interprets a field's description on every call; a scanner decoding thousands of
values a second instead builds, per block, one decoder at load: struct formats, byte and word
order, scale and offset, enum tables and range checks settled once, one pass per poll. The codec
stays the reference: a property test holds every decoder to it.

Given the block's words of the last poll, a decoder decodes only the fields whose words changed:
most telemetry holds still from one poll to the next, and the same words always decode to the
same value and the same doubt, so the caller keeps the last ones for the rest.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

from bridge.errors import CodecError
from bridge.mapping import codec
from bridge.mapping.blocks import Block
from bridge.mapping.fields import RegisterField

Values = dict[str, Any]
Doubts = dict[str, codec.Doubt]
Words = Sequence[int] | Sequence[bool]
BlockDecoder = Callable[..., tuple[Values, Doubts]]  # (words, last words or nothing): what changed
FieldDecoder = Callable[[Sequence[int]], Any]

_FORMAT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}


def field_decoder(f: RegisterField) -> FieldDecoder:
    """A function from exactly `f.register_count` words to the value `codec.decode` gives."""
    if f.type in ("string", "bool", "enum"):
        if f.type == "enum":
            assert f.values is not None
            names = {code: name for name, code in f.values.items()}
            codes = sorted(f.values.values())

            def enum(words: Sequence[int]) -> Any:
                raw = _word(words[0], f)
                try:
                    return names[raw]
                except KeyError:
                    raise CodecError(f"enum code {raw} is not one of {codes}") from None

            return enum
        return lambda words: codec.decode(f, words)
    scaled = f.scale != 1.0 or f.offset != 0.0
    scale, offset = f.scale, f.offset
    little_bytes = (f.byte_order or "big") == "little"
    if f.type == "uint16" and not little_bytes:
        if not scaled:
            return lambda words: _checked(words[0])
        return lambda words: _checked(words[0]) * scale + offset
    unpack = struct.Struct(">" + _FORMAT[f.type]).unpack
    count = f.register_count
    reverse = (f.word_order or "big") == "little"
    packer = struct.Struct(f">{count}H").pack

    def number(words: Sequence[int]) -> Any:
        ordered = words[::-1] if reverse else words
        try:
            data = packer(*ordered)
        except struct.error:
            raise CodecError(f"register words must be 0..65535, got {list(words)}") from None
        if little_bytes:
            data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
        (raw,) = unpack(data)
        return raw * scale + offset if scaled else raw

    return number


def _checked(word: int) -> int:
    if not 0 <= word <= 0xFFFF:
        raise CodecError(f"register words must be 0..65535, got {[word]}")
    return word


def _word(word: int, f: RegisterField) -> int:
    word = _checked(word)
    if (f.byte_order or "big") == "little":
        word = ((word & 0xFF) << 8) | (word >> 8)
    return word


def block_decoder(block: Block) -> BlockDecoder:
    """One function for the whole block: every field's value, and what is doubtful about some;
    given the block's words of the last poll as well, only those of the fields whose words changed.

    The function is generated as straight-line Python, one statement group per field, so a poll
    pays no loop, no tuple unpacking and no call per 16-bit value (the common telemetry field);
    other types call their field decoder."""
    if block.is_bits:
        return _bits_decoder(block)
    env: dict[str, Any] = {"CodecError": CodecError, "Doubt": codec.Doubt, "outside": _outside}
    env["NONE"] = (None,) * block.count  # no last poll: every word differs from it
    body: list[str] = []
    for i, (name, f) in enumerate(block.fields):
        at = f.address - block.start
        key = repr(name)
        low = -math.inf if f.min is None else f.min
        high = math.inf if f.max is None else f.max
        env[f"lo{i}"], env[f"hi{i}"] = low, high
        one_word = f.type in ("uint16", "int16") and (f.byte_order or "big") == "big"
        if one_word:
            body += [f"    w = raw[{at}]", f"    if w != last[{at}]:"]
        else:
            body += [f"    if {_changed(at, f.register_count)}:"]
        start = len(body)
        if one_word:
            value = "w" if f.type == "uint16" else "(w - 65536 if w > 32767 else w)"
            if f.scale != 1.0 or f.offset != 0.0:
                env[f"scale{i}"], env[f"offset{i}"] = f.scale, f.offset
                value = f"{value} * scale{i} + offset{i}"
            body += [
                "    if 0 <= w <= 65535:",
                f"        v = values[{key}] = {value}",
            ]
        else:
            env[f"decode{i}"] = field_decoder(f)
            body += [
                "    try:",
                f"        v = values[{key}] = decode{i}(raw[{at}:{at + f.register_count}])",
                "    except CodecError as exc:",
                f"        values[{key}], doubts[{key}] = None, Doubt(True, str(exc))",
                "    else:",
            ]
        checks = []
        if f.type.startswith("float"):  # integers, even scaled, are always finite
            reason = "f'{v} is not a finite number'"
            checks.append(f"if v != v or v == INF or v == -INF: doubts[{key}] = Doubt(True, {reason})")
            env["INF"] = math.inf
        if f.is_numeric and (f.min is not None or f.max is not None):
            prefix = "elif" if checks else "if"
            checks.append(f"{prefix} not lo{i} <= v <= hi{i}: doubts[{key}] = outside(v, lo{i}, hi{i})")
        body += [f"        {check}" for check in checks] or ["        pass"]
        if one_word:
            body += [
                "    else:",
                f"        values[{key}] = None",
                f"        doubts[{key}] = Doubt(True, f'register words must be 0..65535, got {{[w]}}')",
            ]
        body[start:] = ["    " + line for line in body[start:]]
    head = [
        "def decode_block(raw, last=None):",
        "    values = {}",
        "    doubts = {}",
        "    if last is None:",
        "        last = NONE",
        "    elif raw == last:  # nothing moved: one comparison in C",
        "        return values, doubts",
    ]
    source = "\n".join([*head, *body, "    return values, doubts"])
    exec(compile(source, f"<decoder {block.table} {block.start}+{block.count}>", "exec"), env)
    decode: BlockDecoder = env["decode_block"]
    return decode


def _changed(at: int, count: int) -> str:
    """The test, in generated code, that a field's words differ from the last poll's."""
    if count > 4:
        return f"raw[{at}:{at + count}] != last[{at}:{at + count}]"
    return " or ".join(f"raw[{i}] != last[{i}]" for i in range(at, at + count))


def _outside(value: float, low: float, high: float) -> codec.Doubt:
    below = value < low
    side = "below the minimum" if below else "above the maximum"
    return codec.Doubt(False, f"{value:g} is {side} {low if below else high:g}")


def _bits_decoder(block: Block) -> BlockDecoder:
    plan = [(name, f.address - block.start) for name, f in block.fields]

    def decode_bits(raw: Words, last: Words | None = None) -> tuple[Values, Doubts]:
        if last is None:
            return {name: bool(raw[at]) for name, at in plan}, {}
        return {name: bool(raw[at]) for name, at in plan if raw[at] != last[at]}, {}

    return decode_bits
