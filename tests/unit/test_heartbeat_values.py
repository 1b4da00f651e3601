from bridge.handshake import next_beat


def test_a_counter_never_shows_zero_and_a_toggle_alternates():
    assert [next_beat(v, "counter") for v in (0, 1, 65534, 65535)] == [1, 2, 65535, 1]
    assert [next_beat(v, "toggle") for v in (0, 1)] == [1, 0]
