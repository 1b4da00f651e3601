"""`plc-sim --fault` settings: parsed with clear errors, mirrored into control registers."""

from __future__ import annotations

import pytest

from plc_sim.cli import _faults
from plc_sim.faults import CONTROL_REGISTERS, Faults, parse_fault


def test_fault_specs():
    assert parse_fault("coil:reject_next=2") == ("coil", "reject_next", 2)
    assert parse_fault("pack:stall") == ("pack", "stall", 1)
    assert parse_fault("*:fault_fraction=0.25") == ("*", "fault_permille", 250)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("coil", "expected station:name=value"),
        ("coil:explode=1", "unknown fault 'explode'"),
        ("coil:delay_ms=soon", "'soon' is not a whole number"),
        ("coil:delay_ms=70000", "must be 0..65535"),
    ],
)
def test_bad_fault_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_fault(spec)


def test_fault_presets_per_station_and_for_all():
    faults = _faults(["*:delay_ms=5", "coil:stall"], ["coil", "pack"])
    assert faults["coil"] == Faults(delay_ms=5, stall=1)
    assert faults["pack"].to_registers() == [0, 0, 0, 0, 0, 5] + [0] * 9
    assert len(faults["pack"].to_registers()) == CONTROL_REGISTERS
    with pytest.raises(ValueError, match="unknown station 'oven'"):
        _faults(["oven:stall"], ["coil"])
