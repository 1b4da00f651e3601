"""Which changes a running bridge may take from a reloaded mapping, without a restart.

Only how parameters are derived (`products.<product>.parameters`): that is the recipe engineers
tune on a running line. Everything else shapes the OPC UA address space, the routes of accepted
orders or the registers on the wire, so it waits for a restart; a reload that changes it is refused
as a whole, every such path named.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import MappingIssue
from bridge.mapping.model import LineMapping


def reload_changes(running: LineMapping, new: LineMapping) -> tuple[list[str], list[MappingIssue]]:
    """(paths that changed and may change now, issues for paths that changed and may not)."""
    changed = _diff(running.model_dump(by_alias=True), new.model_dump(by_alias=True), "")
    allowed = [path for path in changed if _reloadable(path)]
    issues = [
        MappingIssue(path, "differs from the running mapping; only products.<product>.parameters may change"
                     " without a restart")
        for path in changed
        if not _reloadable(path)
    ]  # fmt: skip
    return allowed, issues


def _reloadable(path: str) -> bool:
    parts = path.split(".", 3)
    return len(parts) >= 3 and parts[0] == "products" and parts[2] == "parameters"


def _diff(old: Any, new: Any, path: str) -> list[str]:
    """Dotted paths where `old` and `new` differ, as deep as both are mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            child = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                found.append(child)
            else:
                found += _diff(old[key], new[key], child)
        return found
    return [] if old == new else [path]
