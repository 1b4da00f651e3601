"""Stopping background tasks: cancel them all, then wait for each to finish unwinding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def raise_if_cancelled() -> None:
    """Re-raise a cancellation a library swallowed (Python 3.11's asyncio.wait_for can turn one
    into a timeout), so a retry loop does not outlive its own task's cancel()."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
