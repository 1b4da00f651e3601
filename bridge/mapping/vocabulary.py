"""The mapping's words: names, tables, data types and the register counts and ranges they imply,
and the strict base every mapping model is built on."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, StringConstraints

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
ProductId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=32)]
Table = Literal["coil", "discrete_input", "holding", "input"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64", "string", "enum"]
ByteOrder = Literal["big", "little"]
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
READ_REGISTERS_MAX = 125  # registers one Modbus read (function 3 or 4) may ask for

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete_input"})
WRITABLE_TABLES: frozenset[str] = frozenset({"coil", "holding"})
REGISTER_COUNT: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "enum": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}
INTEGER_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
# Names an order supplies besides its options; derivations may read them like options.
ORDER_SOURCES: dict[str, str] = {
    "order_id": "string",
    "unit_serial": "integer",
    "unit_index": "integer",
    "quantity": "integer",
    "priority": "integer",
}


class Strict(BaseModel):
    """Every mapping model: unknown keys refused, nothing coerced, nothing changed once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def is_number(value: object) -> bool:
    """A value a numeric field can hold: Python's bool is an int, and True must not pass for 1."""
    return isinstance(value, int | float) and not isinstance(value, bool)
