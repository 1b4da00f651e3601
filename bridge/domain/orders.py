"""Validating an order against the mapping before anything is journaled or written to a PLC."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    create_model,
)

from bridge.errors import OrderRejected
from bridge.limits import clip
from bridge.mapping.model import LineMapping, Option, Product

ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # matched in full: "$" would let "x\n" through


@dataclass(frozen=True)
class OrderRequest:
    """What a client asks for; nothing in it is trusted until `validate_order` accepts it."""

    order_id: Any
    product: Any
    options: Any = None
    quantity: Any = None
    priority: Any = 0


@dataclass(frozen=True)
class ValidOrder:
    order_id: str
    product: str
    options: dict[str, Any]  # every option, defaults filled in
    quantity: int
    priority: int


def _annotation(option: Option) -> Any:
    if option.type == "enum":
        return Literal[tuple(option.values or [])]
    if option.type == "bool":
        return StrictBool
    if option.type == "string":
        chars = r"\x20-\x7e" if option.charset == "printable_ascii" else r"\x00-\x7f"
        return Annotated[
            str, StringConstraints(strict=True, max_length=option.max_length, pattern=f"^[{chars}]*$")
        ]
    base = StrictInt if option.type == "integer" else StrictInt | StrictFloat
    return Annotated[base, Field(ge=option.min, le=option.max)]


_MODELS: dict[int, tuple[Product, type[BaseModel]]] = {}


def _options_model(product_id: str, product: Product) -> type[BaseModel]:
    """A pydantic model of one product's options, built from the mapping."""
    fields: dict[str, Any] = {}
    for name, option in product.options.items():
        default = option.default
        if default is None:
            fields[name] = (_annotation(option), ...)
        else:
            fields[name] = (_annotation(option), Field(default=default, description=option.description))
    config = ConfigDict(extra="forbid", strict=True, frozen=True)
    return create_model(f"Options_{product_id.replace('-', '_')}", __config__=config, **fields)


def options_model(mapping: LineMapping, product_id: str) -> type[BaseModel]:
    """The options model of a product, built once per loaded mapping."""
    product = mapping.products[product_id]
    cached = _MODELS.get(id(product))
    if cached is None or cached[0] is not product:
        cached = (product, _options_model(product_id, product))
        _MODELS[id(product)] = cached
    return cached[1]


def validate_order(mapping: LineMapping, request: OrderRequest) -> ValidOrder:
    """The order made whole (defaults filled), or OrderRejected naming the first bad field."""
    order_id = request.order_id
    if not isinstance(order_id, str) or not ORDER_ID.fullmatch(order_id):
        raise OrderRejected("must be 1-32 characters: letters, digits, '-' or '_'", field="order_id")
    if not isinstance(request.product, str) or request.product not in mapping.products:
        known = ", ".join(mapping.products)
        product = clip(repr(request.product), 40)
        raise OrderRejected(f"unknown product {product} (known: {known})", field="product")
    product = mapping.products[request.product]
    options = {} if request.options is None else request.options
    if not isinstance(options, Mapping):
        raise OrderRejected("must be an object of option values", field="options")
    try:
        validated = options_model(mapping, request.product).model_validate(dict(options))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in first["loc"])
        option = product.options.get(str(first["loc"][0])) if first["loc"] else None
        if first["type"] == "extra_forbidden":
            reason = f"unknown option (options: {', '.join(product.options)})"
        else:
            reason = (option.reject(first["input"]) if option else None) or first["msg"]
        raise OrderRejected(reason, field=f"options.{name}") from None
    quantity = product.quantity.default if request.quantity is None else request.quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise OrderRejected("must be a whole number", field="quantity")
    if not product.quantity.min <= quantity <= product.quantity.max:
        raise OrderRejected(
            f"must be {product.quantity.min} to {product.quantity.max}, got {quantity}", field="quantity"
        )
    priority = request.priority
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise OrderRejected("must be a whole number from -1000 to 1000", field="priority")
    return ValidOrder(order_id, request.product, validated.model_dump(), quantity, priority)
