"""The event hub: each subscriber its own bounded queue, the oldest dropped and counted, publishing
never waits; and the architecture rule that no face reaches past `Bridge` into a station link."""

from __future__ import annotations

import ast
import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.domain.events import EventHub, OrderChanged, StepChanged
from bridge.domain.model import Order, OrderEvent, OrderState, Step, StepPhase
from bridge.follow import Follower

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _step(i: int) -> StepChanged:
    step = Step("O", 0, i, "charge", i + 1, {}, AT)
    return StepChanged(Order("O", "AC-W", {}, 1, 0), step, StepPhase.BEGUN)


async def test_a_full_queue_drops_its_oldest_counts_and_says_so_once():
    hub = EventHub()
    slow = hub.subscribe("slow", StepChanged, maxsize=2)
    fast = hub.subscribe("fast", StepChanged, maxsize=10)
    events = [_step(i) for i in range(5)]
    with capture_logs() as logs:
        for event in events:
            hub.publish(event)  # never waits, whoever is behind
    assert [await slow.get() for _ in range(2)] == events[3:]
    assert slow.dropped == 3
    assert [e["event"] for e in logs] == ["events_dropped"]  # throttled: one line for the flood
    assert logs[0]["subscriber"] == "slow"
    assert await fast.batch() == events  # another subscriber loses nothing
    assert fast.dropped == 0


async def test_a_subscriber_gets_only_the_kinds_it_asked_for_and_nothing_after_closing():
    hub = EventHub()
    orders = hub.subscribe("orders", OrderChanged)
    order = Order("O", "AC-W", {}, 1, 0)
    changed = OrderChanged(OrderEvent("O", OrderState.QUEUED, AT), order)
    hub.publish(_step(0))
    hub.publish(changed)
    assert await orders.batch() == [changed]
    orders.close()
    assert not hub.wants(OrderChanged)
    hub.publish(changed)
    assert len(orders) == 0


async def test_get_waits_for_the_next_event():
    hub = EventHub()
    steps = hub.subscribe("steps", StepChanged)
    waiting = asyncio.create_task(steps.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    event = _step(7)
    hub.publish(event)
    async with asyncio.timeout(1):
        assert await waiting is event


async def test_a_follower_goes_on_after_a_handler_fails():
    hub = EventHub()
    handled: list[int] = []
    done = asyncio.Event()

    async def handle(event: StepChanged) -> None:
        if event.step.route_index == 0:
            raise RuntimeError("a face's bug")
        handled.append(event.step.route_index)
        done.set()

    follower = Follower(hub, "test", (StepChanged,), handle)
    await follower.start()
    try:
        with capture_logs() as logs:
            hub.publish(_step(0))
            hub.publish(_step(1))
            async with asyncio.timeout(5):
                await done.wait()
    finally:
        await follower.stop()
    assert handled == [1]
    assert any(e["event"] == "event_handling_failed" for e in logs)
    assert not hub.wants(StepChanged)  # stopped: unsubscribed


@pytest.mark.parametrize(("yield_after_s", "order"), [
    (0.0, ["event 0", "other work", "event 1"]),  # handling took its turn: the loop runs
    (60.0, ["event 0", "event 1", "other work"]),  # cheap events: several to a turn
])  # fmt: skip
async def test_a_follower_lets_the_loop_run_within_a_batch_once_its_turn_is_used(yield_after_s, order):
    """A whole line's scans come at one instant: what else is ready (a step's Modbus answer) runs
    between two of them, not after the last."""
    hub = EventHub()
    seen: list[str] = []
    done = asyncio.Event()

    async def handle(event: StepChanged) -> None:
        seen.append(f"event {event.step.route_index}")
        if event.step.route_index == 0:
            asyncio.get_running_loop().call_soon(seen.append, "other work")
        else:
            done.set()

    follower = Follower(hub, "test", (StepChanged,), handle, yield_after_s=yield_after_s)
    await follower.start()
    try:
        hub.publish(_step(0))
        hub.publish(_step(1))  # one batch of two
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        await follower.stop()
    assert seen == order


FACES = ("bridge/opcua", "bridge/http")


@pytest.mark.parametrize("face", FACES)
def test_no_face_imports_the_modbus_adapter(face):
    """Faces read the line through Bridge and its events; the link is transport only."""
    offenders = []
    for path in sorted((ROOT / face).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bridge.modbus"):
                offenders.append(f"{path.relative_to(ROOT)}: from {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names
                              if a.name.startswith("bridge.modbus")]  # fmt: skip
    assert offenders == []
