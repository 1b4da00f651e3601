"""Pure functions between typed values in engineering units and 16-bit register words.

Wire convention (one, tested): a value is packed big-endian into bytes, cut into 16-bit words,
then bytes are swapped inside each word when byte_order is little and the words reversed when
word_order is little. Strings are bytes in order, NUL-padded; word order does not apply to them.
Bools in bit tables (coils, discrete inputs) never pass through here: they are bits already.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.errors import CodecError
from bridge.mapping.fields import RegisterField
from bridge.mapping.vocabulary import INTEGER_RANGE, is_number

_STRUCT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "float64": ">d",
    "enum": ">H",
    "bool": ">H",
}
_FLOAT32_MAX = 3.4028234663852886e38


def _words_from_bytes(data: bytes, byte_order: str, word_order: str, *, reorder_words: bool) -> list[int]:
    if byte_order == "little":
        data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    words = list(struct.unpack(f">{len(data) // 2}H", data))
    if reorder_words and word_order == "little":
        words.reverse()
    return words


def _bytes_from_words(
    words: Sequence[int], byte_order: str, word_order: str, *, reorder_words: bool
) -> bytes:
    ordered = list(words)
    if reorder_words and word_order == "little":
        ordered.reverse()
    data = struct.pack(f">{len(ordered)}H", *ordered)
    if byte_order == "little":
        data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    return data


def check_range(field: RegisterField, value: float) -> None:
    """Raise CodecError if `value` (engineering units) is outside the field's min/max."""
    if field.min is not None and value < field.min:
        raise CodecError(f"{value:g} is below the minimum {field.min:g}")
    if field.max is not None and value > field.max:
        raise CodecError(f"{value:g} is above the maximum {field.max:g}")


def _to_raw(field: RegisterField, value: Any) -> int | float:
    if not is_number(value):
        raise CodecError(f"{field.type} needs a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise CodecError(f"{value} is not a finite number")
    check_range(field, value)
    raw = (value - field.offset) / field.scale
    if field.type in INTEGER_RANGE:
        raw_int = round(raw)
        low, high = INTEGER_RANGE[field.type]
        if not low <= raw_int <= high:
            raise CodecError(f"{value:g} does not fit {field.type} ({low} to {high} raw)")
        return raw_int
    if field.type == "float32" and abs(raw) > _FLOAT32_MAX:
        raise CodecError(f"{value:g} does not fit float32")
    return raw


def encode(field: RegisterField, value: Any) -> list[int]:
    """Register words for `value`; raises CodecError naming the reason when it does not fit."""
    byte_order = field.byte_order or "big"
    word_order = field.word_order or "big"
    if field.type == "string":
        if not isinstance(value, str):
            raise CodecError(f"string needs text, got {type(value).__name__} {value!r}")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError:
            raise CodecError(f"{value!r} is not ASCII") from None
        assert field.length is not None
        capacity = 2 * field.length
        if len(data) > capacity:
            raise CodecError(f"{len(data)} characters do not fit {field.length} registers ({capacity} max)")
        return _words_from_bytes(data.ljust(capacity, b"\0"), byte_order, word_order, reorder_words=False)
    if field.type == "bool":
        if not isinstance(value, bool):
            raise CodecError(f"bool needs true or false, got {value!r}")
        raw: int | float = int(value)
    elif field.type == "enum":
        assert field.values is not None
        if value not in field.values:
            raise CodecError(f"{value!r} is not one of {', '.join(field.values)}")
        raw = field.values[value]
    else:
        raw = _to_raw(field, value)
    data = struct.pack(_STRUCT[field.type], raw)
    return _words_from_bytes(data, byte_order, word_order, reorder_words=True)


@dataclass(frozen=True)
class Doubt:
    """Why a value read from a PLC is not simply good (OPC UA Part 8 semantics): `bad` when it
    cannot stand for a measurement at all (not finite, undecodable), else it is uncertain
    (outside the mapping's min..max, the AnalogItem's EURange)."""

    bad: bool
    reason: str


def assess(field: RegisterField, value: Any) -> Doubt | None:
    """What is doubtful about a decoded `value` of `field`, or None when it is good."""
    if isinstance(value, float) and not math.isfinite(value):
        return Doubt(True, f"{value} is not a finite number")
    if field.is_numeric and is_number(value):
        try:
            check_range(field, value)
        except CodecError as exc:
            return Doubt(False, str(exc))
    return None


def decode(field: RegisterField, words: Sequence[int]) -> Any:
    """The typed value (engineering units) held in `words`; CodecError if they make no sense."""
    if len(words) != field.register_count:
        raise CodecError(f"{field.type} needs {field.register_count} registers, got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise CodecError(f"register words must be 0..65535, got {list(words)}")
    byte_order = field.byte_order or "big"
    word_order = field.word_order or "big"
    if field.type == "string":
        data = _bytes_from_words(words, byte_order, word_order, reorder_words=False)
        text = data.rstrip(b"\0")
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            raise CodecError(f"string registers hold non-ASCII bytes {text!r}") from None
    data = _bytes_from_words(words, byte_order, word_order, reorder_words=True)
    (raw,) = struct.unpack(_STRUCT[field.type], data)
    if field.type == "bool":
        if raw not in (0, 1):
            raise CodecError(f"bool register holds {raw}, expected 0 or 1")
        return bool(raw)
    if field.type == "enum":
        assert field.values is not None
        for name, code in field.values.items():
            if code == raw:
                return name
        raise CodecError(f"enum code {raw} is not one of {sorted(field.values.values())}")
    if field.scale == 1.0 and field.offset == 0.0:
        return raw
    return raw * field.scale + field.offset
