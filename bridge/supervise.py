"""Background work that never dies unseen: a task that raises is logged with its name and started
again after a pause; only cancellation (the owner stopping it) ends it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from bridge.lifecycle import raise_if_cancelled

log = structlog.get_logger(__name__)


async def supervised(name: str, work: Callable[[], Awaitable[None]], *, restart_after_s: float = 1.0) -> None:
    """Run `work()` for as long as the calling task lives, restarting it whenever it fails."""
    restarts = 0
    while True:
        try:
            await work()
            log.warning("task_returned", task=name)  # background work is meant to run until cancelled
        except asyncio.CancelledError:
            raise
        except Exception:
            restarts += 1
            log.exception("task_failed", task=name, restarts=restarts)
        raise_if_cancelled()  # a cancel a library swallowed still ends the supervision
        await asyncio.sleep(restart_after_s)


def start_supervised(
    tasks: list[asyncio.Task[None]], name: str, work: Callable[[], Awaitable[None]], **kw: float
) -> None:
    """Start `work` supervised as a task named `name`, kept in `tasks` (its owner's list)."""
    tasks.append(asyncio.create_task(supervised(name, work, **kw), name=name))
