"""What a client may send: order ids matched in full, Options JSON bounded in size and depth."""

from __future__ import annotations

import pytest

from bridge.domain.orders import OrderRequest, validate_order
from bridge.errors import OrderRejected
from bridge.limits import OPTIONS_JSON_CHARS, clip
from bridge.opcua.methods import parse_options


@pytest.mark.parametrize("order_id", ["x\n", "x" * 32 + "\n", "\nx", "x\r", "a b", "", "x" * 33])
def test_order_ids_are_matched_in_full(ac_mapping, order_id):
    with pytest.raises(OrderRejected, match="order_id: must be 1-32 characters"):
        validate_order(ac_mapping, OrderRequest(order_id, "AC-W"))


def test_a_32_character_id_is_taken(ac_mapping):
    assert validate_order(ac_mapping, OrderRequest("x" * 32, "AC-W")).order_id == "x" * 32


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "options: longer than"),
        ("[" * 20 + "]" * 20, "options: nested deeper than 8 levels"),
        ('{"a":' * 5000 + "1" + "}" * 5000, "options: nested deeper"),
        ("{", "options: not valid JSON"),
        ('["a"]', "options: must be a JSON object"),
        ("x" * (OPTIONS_JSON_CHARS + 1), f"options: longer than {OPTIONS_JSON_CHARS} characters"),
    ],
)
def test_options_json_is_bounded(text, reason):
    with pytest.raises(OrderRejected, match=reason):
        parse_options(text)


def test_a_huge_product_name_is_clipped_in_the_reason(ac_mapping):
    with pytest.raises(OrderRejected) as refused:
        validate_order(ac_mapping, OrderRequest("A", "P" * 200_000))
    assert len(str(refused.value)) < 200


def test_clip_says_how_long_the_text_was():
    assert clip("abc", 5) == "abc"
    clipped = clip("x" * 1000, 40)
    assert len(clipped) == 40
    assert clipped.endswith("(1000 chars)")
