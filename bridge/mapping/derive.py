"""Station parameters from an order's values, by the mapping's declarative rules (no eval)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.mapping.model import Derivation, Product


def apply_rule(rule: Derivation, values: Mapping[str, Any]) -> Any:
    """One parameter's value; `values` holds the order's options and order values by name."""
    if rule.constant is not None:
        return rule.constant
    if rule.from_ is not None:
        return values[rule.from_]
    if rule.linear is not None:
        return values[rule.linear] * rule.gain + rule.offset
    entry: Any = rule.table
    for source in rule.sources:
        entry = entry[values[source]]
    return entry


def derive_parameters(product: Product, station_type: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of `station_type` for one unit of an order, in register-map order."""
    rules = product.parameters.get(station_type, {})
    return {name: apply_rule(rule, values) for name, rule in rules.items()}
