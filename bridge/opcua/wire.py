"""Faster binary encoding of data-change notifications, byte for byte asyncua's own.

asyncua encodes every notification through its generic dataclass serializer: per value a walk of
the DataValue's optional fields, a Variant type dispatch and a datetime → FILETIME conversion for
each timestamp. At ten thousand values a second that was the largest cost left in publishing
(docs/telemetry.md). Here a DataChangeNotification is encoded in one pass: scalars of the numeric
types with one precompiled struct each, timestamps converted once per distinct datetime (a scan's
values share theirs). Anything else (arrays, picoseconds, diagnostic infos, a value that does not
fit its type) goes asyncua's way, so the bytes and the errors stay asyncua's;
tests/unit/test_wire.py holds the two equal.

Installed by wrapping asyncua 2.1's `ua_binary.create_dataclass_serializer`, which
`struct_to_binary` looks up for every structure it encodes (asyncua is pinned <2.2).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.ua import ua_binary

_VT = ua.VariantType
_CODES = {
    _VT.Boolean: "?", _VT.SByte: "b", _VT.Byte: "B", _VT.Int16: "h", _VT.UInt16: "H", _VT.Int32: "i",
    _VT.UInt32: "I", _VT.Int64: "q", _VT.UInt64: "Q", _VT.Float: "f", _VT.Double: "d",
}  # fmt: skip
_SCALARS = {vtype: (struct.Struct("<B" + code).pack, int(vtype)) for vtype, code in _CODES.items()}
# The usual notified value (a numeric scalar with a status and both timestamps, no picoseconds)
# with its client handle before it, in one pack: handle, mask, type, value, status, source, server.
_WHOLE = {vtype: struct.Struct("<IBB" + code + "Iqq").pack for vtype, code in _CODES.items()}
_ALL_FIELDS = 0x01 | 0x02 | 0x04 | 0x08
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_INT64 = struct.Struct("<q")
_BYTE = struct.Struct("<B")

_original = ua_binary.create_dataclass_serializer


def install() -> None:
    """Encode DataChangeNotifications here from now on (idempotent, process-wide)."""
    if ua_binary.create_dataclass_serializer is not _original:
        return
    ua_binary.create_dataclass_serializer = _serializer_for


@functools.cache
def _serializer_for(dataclazz: type) -> Callable[[Any], bytes]:
    if dataclazz is ua.DataChangeNotification:
        return encode_data_change
    return _original(dataclazz)


def encode_data_change(notification: ua.DataChangeNotification) -> bytes:
    items, infos = notification.MonitoredItems, notification.DiagnosticInfos
    if items is None or infos:
        return _original(ua.DataChangeNotification)(notification)
    parts = [_INT32.pack(len(items))]
    append = parts.append
    for item in items:
        value = item.Value
        whole = _usual(value)
        if whole is not None:
            try:
                variant, source, server = value.Value, value.SourceTimestamp, value.ServerTimestamp
                append(whole(
                    item.ClientHandle, _ALL_FIELDS, int(variant.VariantType), variant.Value,
                    value.StatusCode.value, _win_epoch(source), _win_epoch(server),
                ))  # fmt: skip
                continue
            except (struct.error, TypeError, OverflowError):  # asyncua's own path raises its own error
                pass
        append(_UINT32.pack(item.ClientHandle))
        append(encode_data_value(value))
    append(_INT32.pack(-1) if infos is None else _INT32.pack(0))
    return b"".join(parts)


def _usual(value: ua.DataValue) -> Callable[..., bytes] | None:
    """The one-pack encoder of a notification carrying this value, if it has the usual shape."""
    variant = value.Value
    if (
        variant is None or variant.is_array or variant.Value is None
        or isinstance(variant.Value, list | tuple)
        or value.StatusCode is None or value.SourceTimestamp is None or value.ServerTimestamp is None
        or value.SourcePicoseconds is not None or value.ServerPicoseconds is not None
    ):  # fmt: skip
        return None
    return _WHOLE.get(variant.VariantType)


def encode_data_value(value: ua.DataValue) -> bytes:
    if value.SourcePicoseconds is not None or value.ServerPicoseconds is not None:
        return _original(ua.DataValue)(value)
    mask = 0
    parts = [b""]
    variant = value.Value
    if variant is not None:
        mask = 0x01
        parts.append(_encode_variant(variant))
    if value.StatusCode is not None:
        mask |= 0x02
        parts.append(_UINT32.pack(value.StatusCode.value))
    if value.SourceTimestamp is not None:
        mask |= 0x04
        parts.append(_filetime(value.SourceTimestamp))
    if value.ServerTimestamp is not None:
        mask |= 0x08
        parts.append(_filetime(value.ServerTimestamp))
    parts[0] = _BYTE.pack(mask)
    return b"".join(parts)


def _encode_variant(variant: ua.Variant) -> bytes:
    scalar = _SCALARS.get(variant.VariantType)
    value = variant.Value
    if scalar is None or variant.is_array or value is None or isinstance(value, list | tuple):
        return ua_binary.variant_to_binary(variant)
    pack, code = scalar
    try:
        return pack(code, value)
    except (struct.error, TypeError, OverflowError):  # asyncua's own path raises its own error
        return ua_binary.variant_to_binary(variant)


@functools.lru_cache(maxsize=256)
def _filetime(at: datetime) -> bytes:
    return _INT64.pack(_win_epoch(at))


@functools.lru_cache(maxsize=256)
def _win_epoch(at: datetime) -> int:
    return int(ua.datetime_to_win_epoch(at))
