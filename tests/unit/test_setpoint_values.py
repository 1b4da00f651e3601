"""What a client's Variant may carry into a setpoint: the checks before the mapping's own."""

from __future__ import annotations

import pytest
from asyncua import ua

from bridge.mapping.fields import RegisterField
from bridge.opcua.setpoints import Refused, Setpoint, value_of

V = ua.VariantType
SCALED = RegisterField(address=0, type="int16", scale=0.1, min=550, max=650)
COUNT = RegisterField(address=0, type="uint16", min=0, max=100)
FLAG = RegisterField(table="coil", address=0, type="bool")
PROFILE = RegisterField(address=0, type="enum", values={"standard": 0, "extended": 1})
NAME = RegisterField(address=0, type="string", length=4)


def sp(field: RegisterField) -> Setpoint:
    codes = {"standard": 0, "extended": 1} if field.type == "enum" else None
    return Setpoint("coil", "x", field, codes)


@pytest.mark.parametrize(
    ("field", "variant", "expected"),
    [
        (SCALED, ua.Variant(630.5, V.Double), 630.5),
        (SCALED, ua.Variant(600, V.Int32), 600),  # any numeric Variant: the codec checks the range
        (COUNT, ua.Variant(7.0, V.Double), 7),
        (FLAG, ua.Variant(False, V.Boolean), False),
        (PROFILE, ua.Variant(1, V.Int32), "extended"),
        (NAME, ua.Variant("AB", V.String), "AB"),
    ],
)
def test_accepted_values(field, variant, expected):
    value = value_of(sp(field), variant)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("field", "variant", "code", "reason"),
    [
        (
            SCALED,
            ua.Variant("hot", V.String),
            ua.StatusCodes.BadTypeMismatch,
            "a number required, got String",
        ),
        (SCALED, ua.Variant(True, V.Boolean), ua.StatusCodes.BadTypeMismatch, "a number required"),
        (SCALED, ua.Variant([600.0], V.Double), ua.StatusCodes.BadTypeMismatch, "a scalar value"),
        (SCALED, None, ua.StatusCodes.BadTypeMismatch, "a scalar value"),
        (
            COUNT,
            ua.Variant(7.5, V.Double),
            ua.StatusCodes.BadTypeMismatch,
            "a whole number required, got 7.5",
        ),
        (FLAG, ua.Variant(0, V.Int32), ua.StatusCodes.BadTypeMismatch, "Boolean required, got Int32"),
        (PROFILE, ua.Variant(5, V.Int32), ua.StatusCodes.BadOutOfRange, "5 is not one of 0, 1"),
        (PROFILE, ua.Variant("extended", V.String), ua.StatusCodes.BadTypeMismatch, "an enumeration code"),
        (NAME, ua.Variant(12, V.Int32), ua.StatusCodes.BadTypeMismatch, "String required"),
    ],
)
def test_refused_values(field, variant, code, reason):
    with pytest.raises(Refused) as refused:
        value_of(sp(field), variant)
    assert refused.value.code == code
    assert reason in refused.value.reason
