"""Coalescing register fields into as few requests as the layout allows."""

from __future__ import annotations

from bridge.mapping.blocks import plan_blocks
from bridge.mapping.fields import RegisterField


def f(address: int, type_: str = "uint16", table: str = "holding", **kw) -> RegisterField:
    return RegisterField(table=table, address=address, type=type_, **kw)


def test_contiguous_fields_make_one_block_per_table():
    blocks = plan_blocks([("a", f(100)), ("b", f(101, "float32")), ("c", f(0, "bool", "coil")),
                          ("d", f(1, "bool", "coil"))])  # fmt: skip
    assert [(b.table, b.start, b.count) for b in blocks] == [("coil", 0, 2), ("holding", 100, 3)]
    assert [name for name, _ in blocks[1].fields] == ["a", "b"]


def test_reads_bridge_small_gaps_but_writes_never_do():
    fields = [("a", f(100)), ("b", f(104))]
    assert [(b.start, b.count) for b in plan_blocks(fields, max_gap=8)] == [(100, 5)]
    assert [(b.start, b.count) for b in plan_blocks(fields, max_gap=8, write=True)] == [(100, 1), (104, 1)]


def test_protocol_limits_split_blocks():
    fields = [(f"s{i}", f(i * 100, "string", length=100)) for i in range(2)]
    assert len(plan_blocks(fields, max_gap=0)) == 2
    big = [(f"r{i}", f(i, "uint16", "input")) for i in range(130)]
    assert [(b.start, b.count) for b in plan_blocks(big)] == [(0, 125), (125, 5)]


def test_every_ac_station_polls_its_telemetry_in_one_request(ac_mapping):
    for station in ac_mapping.stations:
        kind = ac_mapping.station_type(station)
        fields = ac_mapping.resolved_fields(station)
        blocks = plan_blocks([(n, fields[n]) for n in kind.telemetry], max_gap=8)
        assert len(blocks) == 1, station
        writes = plan_blocks([(n, fields[n]) for n in kind.parameters], write=True)
        assert len(writes) == (2 if station == "panel" else 1), station  # panel: registers + a coil
