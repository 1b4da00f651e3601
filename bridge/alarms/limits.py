"""Which limit of an exclusive limit alarm a value stands beyond, with the deadband and the
on-delay (docs/alarms.md). Pure: the book keeps the pending limit between two polls."""

from __future__ import annotations

from bridge.mapping.fields import LimitAlarms

_LEVEL = {"high_high": 2, "high": 1, "low": 1, "low_low": 2}
Pending = tuple[str, float] | None  # (limit, since when the value stands beyond it)


def _side(name: str) -> str:
    return name.partition("_")[0]  # high or low


def beyond(limits: LimitAlarms, value: float, active: str | None) -> str | None:
    """The most severe limit `value` stands beyond. The active limit, and the milder ones on its
    side, hold until the value is back inside them by the deadband."""
    for name, limit in limits.limits():
        held = active is not None and _side(name) == _side(active) and _LEVEL[name] <= _LEVEL[active]
        band = limits.deadband if held else 0.0
        if _side(name) == "high" and value > limit.limit - band:
            return name
        if _side(name) == "low" and value < limit.limit + band:
            return name
    return None


def judge(
    limits: LimitAlarms, value: float, active: str | None, pending: Pending, now: float
) -> tuple[str | None, Pending]:
    """(the limit to be active now, the limit still waiting out its on-delay). Going back to normal
    or to a milder limit is at once; a new or more severe limit must stand `on_delay_s` first."""
    target = beyond(limits, value, active)
    if target is None:
        return None, None
    hold = None  # what stands while the target waits
    if active is not None and _side(target) == _side(active):
        if _LEVEL[target] <= _LEVEL[active]:
            return target, None
        hold = active  # escalating: the milder limit stands meanwhile
    since = pending[1] if pending is not None and pending[0] == target else now
    if now - since >= limits.on_delay_s:
        return target, None
    return hold, (target, since)
