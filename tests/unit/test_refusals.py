"""Repeated refusals: the first few of a kind (event, user, door, client address) recorded as they come,
the rest of their window as one row with their count and the last reason."""

from __future__ import annotations

import asyncio

from bridge.security.refusals import RefusalTally, address_of, client_of, door_of


def test_the_address_and_door_are_read_from_either_face_s_channel():
    assert address_of("https 10.0.0.7:51234") == "10.0.0.7"
    assert address_of("Basic256Sha256/SignAndEncrypt [::1]:4711") == "[::1]"
    assert address_of("None/None 10.0.0.9:4711") == "10.0.0.9"
    assert address_of("") == ""
    doors = [door_of(c) for c in ("https 10.0.0.7:5", "None/None 10.0.0.7:5", "")]
    assert doors == ["https", "None/None", ""]


def test_a_client_is_its_user_else_anonymous_at_its_address():
    assert client_of("olga", "https 10.0.0.7:51234") == "olga"
    assert client_of("anonymous", "http 10.0.0.7:51234") == "anonymous@10.0.0.7"
    assert client_of("", "Basic256Sha256/SignAndEncrypt 10.0.0.8:4711") == "anonymous@10.0.0.8"
    assert client_of("anonymous", "None/None 10.0.0.8:4711") == "anonymous@10.0.0.8"  # OPC UA, no --security
    assert client_of("anonymous", "") == "anonymous"  # the Python API naming no client: no address


async def test_a_window_of_refusals_is_a_few_rows_and_a_count_and_another_client_is_its_own():
    rows: list[tuple[str, ...]] = []
    tally = RefusalTally(lambda *row: rows.append(row), window_s=0.2, first_n=2)
    for i in range(6):
        tally.refused("order_submit", "anonymous", "", f"refused X-{i}: unknown product", "http 10.0.0.7:50")
    tally.refused("order_submit", "anonymous", "", "refused Y-0: unknown product", "http 10.0.0.8:5000")
    tally.refused("order_submit", "anonymous", "", "refused Z-0: unknown product", "None/None 10.0.0.7:51")
    assert [r[3] for r in rows] == [
        "refused X-0: unknown product", "refused X-1: unknown product", "refused Y-0: unknown product",
        "refused Z-0: unknown product",  # the same host at another door: told, not counted in the flood
    ]  # fmt: skip
    async with asyncio.timeout(5):
        while len(rows) < 5:  # noqa: ASYNC110 - the window closes by itself
            await asyncio.sleep(0.02)
    assert rows[4][3].startswith("refused ×4 more in ")
    assert rows[4][3].endswith(" s; the last: refused X-5: unknown product")
    assert rows[4][4] == "http 10.0.0.7:50"
    tally.flush()
    assert len(rows) == 5  # the others refused once each: nothing more to say


def test_without_an_event_loop_each_refusal_is_recorded_as_it_comes():
    rows: list[tuple[str, ...]] = []
    tally = RefusalTally(lambda *row: rows.append(row))
    tally.refused("login", "x", "", "refused: wrong user name or password", "")
    tally.refused("login", "x", "", "refused: wrong user name or password", "")
    assert len(rows) == 2
