"""Stopping background tasks: cancel them all, then wait for each to finish unwinding."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

log = structlog.get_logger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]], *, timeout_s: float = 5.0) -> None:
    """Cancel `tasks` and wait for them, at most `timeout_s`: a task that swallows its cancel
    (a library bug) is named in the log and left behind instead of hanging the shutdown."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=timeout_s)
    for task in stuck:
        log.error("task_did_not_stop", task=task.get_name())
    for task in pending:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task_failed_while_stopping", task=task.get_name(), error=repr(task.exception()))


def raise_if_cancelled() -> None:
    """Re-raise a cancellation a library swallowed (Python 3.11's asyncio.wait_for can turn one
    into a timeout), so a retry loop does not outlive its own task's cancel()."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
