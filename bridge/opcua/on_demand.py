"""The address space's node table, able to build a node the moment it is asked for.

A finished order costs a few kilobytes as nodes (order, members, options, steps): a thousand of
them retained for an hour was most of the bridge's memory and most of its restart. So finished
orders beyond the most recent ones keep only their reference in the Orders folder (browsable as
ever), and their nodes are built from the journal when a client (or the bridge) asks for any of
them, the way asyncua's own shelf loading fills its table (docs/opcua-model.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MISSING = object()


class OnDemandNodes(dict[Any, Any]):
    """`resolve(nodeid)` builds the nodes `nodeid` belongs to, if it can, and says whether it did.

    Present nodes are looked up as in a plain dict (`[]` never calls Python code for them); only
    a miss, `in` and `get` ask `resolve`, which rejects what is not a compact order's at once."""

    def __init__(self, nodes: dict[Any, Any], resolve: Callable[[Any], bool]) -> None:
        super().__init__(nodes)
        self.resolve = resolve

    def __missing__(self, key: Any) -> Any:
        if self.resolve(key):
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self.resolve(key)

    def get(self, key: Any, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is not _MISSING:
            return value
        return dict.get(self, key, default) if self.resolve(key) else default
