"""Orders through a running bridge, the way several integration tests drive one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bridge.domain.model import Order
from bridge.service import Bridge


async def run_orders(
    bridge: Bridge,
    prefix: str,
    count: int,
    *,
    timeout_s: float = 30,
    options: Callable[[int], dict[str, Any]] = lambda i: {},
) -> list[Order]:
    """Submit `count` AC-W orders named `prefix-i`, wait until the bridge is idle (bounded: a wedged
    link fails the test), and return the orders as they ended."""
    for i in range(count):
        await bridge.submit(f"{prefix}-{i}", "AC-W", options(i))
    async with asyncio.timeout(timeout_s):
        await bridge.wait_idle()
    return [bridge.get(f"{prefix}-{i}") for i in range(count)]


async def until(predicate: Callable[[], bool], timeout_s: float = 20, every_s: float = 0.05) -> None:
    """Until `predicate()` holds, bounded: a state the bridge reaches by itself, polled."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polls state, bounded
            await asyncio.sleep(every_s)
