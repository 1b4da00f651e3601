"""Register blocks decoded by functions built once from the mapping (pure).

`codec.decode` interprets a field's description on every call; a scanner decoding thousands of
values a second instead builds, per block, one decoder at load: struct formats, byte and word
order, scale and offset, enum tables and range checks settled once, one pass per poll. The codec
stays the reference: a property test holds every decoder to it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

from bridge.errors import CodecError
from bridge.mapping import codec
from bridge.mapping.blocks import Block
from bridge.mapping.model import RegisterField

Values = dict[str, Any]
Doubts = dict[str, codec.Doubt]
BlockDecoder = Callable[[Sequence[int] | Sequence[bool]], tuple[Values, Doubts]]
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
    """One function for the whole block: every field's value, and what is doubtful about some."""
    plan: list[tuple[str, int, int, FieldDecoder, float, float, bool]] = []
    for name, f in block.fields:
        low = -math.inf if f.min is None else f.min
        high = math.inf if f.max is None else f.max
        decode = field_decoder(f) if not block.is_bits else bool
        plan.append((name, f.address - block.start, f.register_count, decode, low, high, f.is_numeric))

    def decode_block(raw: Sequence[int] | Sequence[bool]) -> tuple[Values, Doubts]:
        values: Values = {}
        doubts: Doubts = {}
        for name, at, count, decode, low, high, numeric in plan:
            try:
                value = decode(raw[at] if count == 1 and block.is_bits else raw[at : at + count])  # type: ignore[arg-type]
            except CodecError as exc:
                values[name], doubts[name] = None, codec.Doubt(True, str(exc))
                continue
            values[name] = value
            if numeric:
                if value != value or value in (math.inf, -math.inf):  # NaN or ±Inf
                    doubts[name] = codec.Doubt(True, f"{value} is not a finite number")
                elif not low <= value <= high:
                    doubts[name] = codec.Doubt(
                        False, f"{value:g} is {'below the minimum' if value < low else 'above the maximum'}"
                        f" {low if value < low else high:g}"
                    )  # fmt: skip
        return values, doubts

    return decode_block
