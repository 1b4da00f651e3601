"""The journal's one writer thread: every write runs there, in the order given, so the event loop
never waits on SQLite or the disk.

What the loop hands over while the thread is busy is taken as one batch: the commits in it go
into one transaction (group commit: one disk flush for the writes of every station that came at
once), and the loop is woken once per batch, not once per write. A batch's transaction that fails
is tried again write by write, so each caller gets its own outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = object()
WRITER_WAIT_S = 30.0  # the longest a caller that is no coroutine waits for the writer (close, load_audit)


class WriterThread:
    def __init__(self, name: str, group: Callable[[list[Any]], list[Any]]) -> None:
        """`group(items)` commits the items of several `commit()` calls in one transaction and
        returns their results in order, or raises (then each is committed alone)."""
        self._group = group
        self._items: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` on the writer thread, alone, awaited."""
        future = asyncio.get_running_loop().create_future()
        self._items.put((call, args, future, False))
        return await future  # type: ignore[no-any-return]

    async def commit(self, item: Any) -> Any:
        """`item` committed with whatever else is waiting; its result, awaited."""
        future = asyncio.get_running_loop().create_future()
        self._items.put((None, (item,), future, True))
        return await future

    def call(self, call: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """`call(*args)` on the writer thread, for a caller that is not a coroutine (it may wait)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._items.put((call, args, future, False))
        return future

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish what was handed over, then end the thread (waiting at most `timeout_s`)."""
        self._items.put((_STOP, (), None, False))
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            batch = [self._items.get()]
            while True:
                try:
                    batch.append(self._items.get_nowait())
                except queue.Empty:
                    break
            stop = any(item[0] is _STOP for item in batch)
            outcomes = self._outcomes([item for item in batch if item[0] is not _STOP])
            _settle_all(outcomes)
            if stop:
                return

    def _outcomes(self, batch: list[tuple[Any, ...]]) -> list[tuple[Any, Any, BaseException | None]]:
        outcomes: list[tuple[Any, Any, BaseException | None]] = []
        grouped = [item for item in batch if item[3]]
        results: list[Any] | None = None
        if len(grouped) > 1:
            try:
                results = self._group([item[1][0] for item in grouped])
            except Exception:
                results = None  # each alone below, for its own outcome
        done = dict(zip((id(item) for item in grouped), results, strict=True)) if results is not None else {}
        for item in batch:
            call, args, future, is_commit = item
            if id(item) in done:
                outcomes.append((future, done[id(item)], None))
                continue
            try:
                value = self._group([args[0]])[0] if is_commit else call(*args)
            except BaseException as exc:  # handed to the caller, who decides
                outcomes.append((future, None, exc))
            else:
                outcomes.append((future, value, None))
        return outcomes


def _settle_all(outcomes: list[tuple[Any, Any, BaseException | None]]) -> None:
    """Each outcome to its caller: the loop's futures in one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
    for outcome in outcomes:
        future = outcome[0]
        if isinstance(future, concurrent.futures.Future):
            _settle(outcome)
        else:
            by_loop.setdefault(future.get_loop(), []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop that has closed: nobody waits any more
            loop.call_soon_threadsafe(_settle_each, settled)


def _settle_each(outcomes: list[tuple[Any, Any, BaseException | None]]) -> None:
    for outcome in outcomes:
        _settle(outcome)


def _settle(outcome: tuple[Any, Any, BaseException | None]) -> None:
    future, value, error = outcome
    if future.done():  # the caller was cancelled meanwhile (the write itself is done)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
