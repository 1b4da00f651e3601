"""Stopping background tasks: cancel them all, then wait for each to finish unwinding; and
settling the heap once start-up is over."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterable, Iterator

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


FULL_COLLECTION_AFTER = 100  # middle-generation collections (Python's default: 10)


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """No cyclic collection while start-up builds what lives as long as the process: each one found
    nothing to free and walked the half-built address space again (0.3-0.6 s of a 3.5-4.5 s start
    to the first Read here). `settle_heap()` collects once and takes collecting up again; leaving
    the block does too, for a start that failed before it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def settle_heap() -> int:
    """Take what start-up built out of the cyclic collector's sight, and run full collections a
    tenth as often; returns how many objects were set aside.

    The OPC UA address space is about a million objects (asyncua's standard nodes and the plant)
    that live as long as the process. Every full collection walked them all and held the event
    loop for 100-270 ms, missing telemetry polls and stretching handshakes; with them set aside,
    full collections came every half second while orders ran, each walking the orders' nodes
    (docs/telemetry.md). Young garbage is collected as before; frozen objects are still freed by
    reference counting when dropped (a node deleted on a mapping reload): only a reference cycle
    among them would stay, and start-up builds none that it later drops."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
    gc.enable()  # after collections_paused()
    frozen = gc.get_freeze_count()
    log.info("heap_settled", frozen_objects=frozen, full_collection_after=FULL_COLLECTION_AFTER)
    return frozen


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT or SIGTERM sets, for a command that runs until told to stop (a platform
    without loop signal handlers keeps Python's own: Ctrl-C still ends the run)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def breathe() -> None:
    """Let the loop run between the parts of a long build that never waits on its own. Not
    `sleep(0)`: that is one turn of the loop, and a Modbus request on the same loop needs several
    (the request out, the answer in, its callback), so it would wait behind every part."""
    await asyncio.sleep(0.005)
