"""The order state machine."""

from __future__ import annotations

import pytest

from bridge.domain.model import IllegalTransition, Order, OrderState


def test_the_happy_path_and_its_timestamps():
    order = Order("A", "AC-W", {}, 1)
    for state in (OrderState.QUEUED, OrderState.RUNNING, OrderState.COMPLETED):
        order.move_to(state)
    assert order.state.is_final
    assert order.completed_at is not None


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), OrderState.COMPLETED),
        ((OrderState.QUEUED,), OrderState.COMPLETED),
        ((OrderState.QUEUED, OrderState.CANCELLED), OrderState.RUNNING),
        ((OrderState.QUEUED, OrderState.RUNNING, OrderState.COMPLETED), OrderState.CANCELLED),
    ],
)
def test_illegal_transitions_are_bugs(path, illegal):
    order = Order("A", "AC-W", {}, 1)
    for state in path:
        order.move_to(state)
    with pytest.raises(IllegalTransition, match=f"order A: .* → {illegal}"):
        order.move_to(illegal)
