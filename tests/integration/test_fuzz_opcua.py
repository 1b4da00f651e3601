"""Property-based fuzz of the OPC UA face: thousands of generated method calls and writes against a
running server. Whatever a client sends, the answer is a status that says why (BadInvalidArgument,
BadTypeMismatch, …), never BadUnexpectedError or BadInternalError, and the server keeps serving."""

from __future__ import annotations

import json

import pytest
from asyncua import ua
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.opcua_rig import opcua_rig

pytestmark = pytest.mark.slow

NEVER = {ua.StatusCodes.BadUnexpectedError, ua.StatusCodes.BadInternalError}
METHODS = ["SubmitOrder", "SubmitOrder_AC-W", "SubmitOrder_AC-C", "CancelOrder", "ReloadMapping", "Nope"]
WRITABLE = [
    "Stations.coil.Setpoints.furnace_setpoint_c",
    "Stations.test_a.Setpoints.run_test_profile",
    "Stations.coil.CurrentOrder",
    "Orders",
    "Stations.pack.Telemetry.labels_printed",
]
OPTION_NAMES = [
    "capacity_btu",
    "panel_color",
    "engraving",
    "inverter",
    "wifi_module",
    "quantity",
    "priority",
    "x",
]

order_ids = st.one_of(
    st.sampled_from(["F-1", "F-2", "F-3", "x\n", "", " ", "a" * 33]),
    st.text(max_size=40),
    st.text(alphabet="ab-_\n\x00", max_size=5),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
)
options_text = st.one_of(
    st.dictionaries(st.sampled_from(OPTION_NAMES), json_values, max_size=6).map(json.dumps),
    st.integers(min_value=1, max_value=3000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(min_value=1, max_value=3000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.text(max_size=60),
    st.just("x" * 70_000),
)


def variants() -> st.SearchStrategy[ua.Variant]:
    scalar = st.one_of(
        order_ids.map(lambda v: ua.Variant(v, ua.VariantType.String)),
        options_text.map(lambda v: ua.Variant(v, ua.VariantType.String)),
        st.integers(-(2**31), 2**31 - 1).map(lambda v: ua.Variant(v, ua.VariantType.Int32)),
        st.integers(0, 2**32 - 1).map(lambda v: ua.Variant(v, ua.VariantType.UInt32)),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: ua.Variant(v, ua.VariantType.Int64)),
        st.floats().map(lambda v: ua.Variant(v, ua.VariantType.Double)),
        st.floats(width=32).map(lambda v: ua.Variant(v, ua.VariantType.Float)),
        st.booleans().map(lambda v: ua.Variant(v, ua.VariantType.Boolean)),
        st.binary(max_size=20).map(lambda v: ua.Variant(v, ua.VariantType.ByteString)),
        st.just(ua.Variant()),
        st.just(ua.Variant(None, ua.VariantType.String)),
    )
    arrays = st.one_of(
        st.lists(st.text(max_size=10), max_size=4).map(lambda v: ua.Variant(v, ua.VariantType.String)),
        st.lists(st.integers(-5, 5), max_size=4).map(lambda v: ua.Variant(v, ua.VariantType.Int32)),
    )
    return scalar | arrays


def strings(values: st.SearchStrategy[str]) -> st.SearchStrategy[ua.Variant]:
    return values.map(lambda v: ua.Variant(v, ua.VariantType.String))


products = st.sampled_from(["AC-W", "AC-C", "ac-w", "", "AC-W\n"]) | st.text(max_size=8)
# Calls shaped like the declarations, so that most reach the order checks, and free-form ones.
json_submits = st.tuples(
    st.just("SubmitOrder"),
    st.tuples(strings(order_ids), strings(products), strings(options_text) | variants()).map(list),
)
typed_submits = st.tuples(
    st.just("SubmitOrder_AC-W"),
    st.tuples(strings(order_ids), variants(), variants(), variants(), variants(), variants(), variants()).map(
        list
    ),
)
calls = json_submits | typed_submits | st.tuples(st.sampled_from(METHODS), st.lists(variants(), max_size=9))
writes = st.tuples(st.sampled_from(WRITABLE), variants())


@pytest.fixture
async def rig(ac_mapping, tmp_path_factory):
    async with opcua_rig(ac_mapping, tmp_path_factory.mktemp("fuzz")) as rig:
        yield rig


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(batch=st.lists(st.one_of(calls, writes), min_size=1, max_size=12))
async def test_no_input_breaks_the_contract(rig, batch):
    line = rig.line_node.nodeid
    for method, args in (item for item in batch if isinstance(item[1], list)):
        request = ua.CallMethodRequest(
            ObjectId=line, MethodId=ua.NodeId(f"Plant.Lines.ac_line.{method}", rig.ns), InputArguments=args
        )
        (result,) = await rig.client.uaclient.call([request])
        assert result.StatusCode.value not in NEVER, (method, args, result)
    for path, variant in (item for item in batch if isinstance(item[1], ua.Variant)):
        params = ua.WriteParameters(
            NodesToWrite=[
                ua.WriteValue(
                    NodeId=ua.NodeId(f"Plant.Lines.ac_line.{path}", rig.ns),
                    AttributeId=ua.AttributeIds.Value,
                    Value=ua.DataValue(variant),
                )
            ]
        )
        (code,) = await rig.client.uaclient.write(params)
        assert code.value not in NEVER, (path, variant, code)


async def test_a_huge_refused_argument_is_clipped_in_the_log(rig):
    from structlog.testing import capture_logs

    huge = "x" * 200_000
    with capture_logs() as logs:
        for method, args in (("SubmitOrder", [huge, huge, "{}"]), ("CancelOrder", [huge])):
            request = ua.CallMethodRequest(
                ObjectId=rig.line_node.nodeid,
                MethodId=ua.NodeId(f"Plant.Lines.ac_line.{method}", rig.ns),
                InputArguments=[ua.Variant(a, ua.VariantType.String) for a in args],
            )
            (result,) = await rig.client.uaclient.call([request])
            assert result.StatusCode.value not in NEVER
    assert logs
    long = [(e["event"], k) for e in logs for k, v in e.items() if len(str(v)) >= 1000]
    assert not long, long
    audit = rig.bridge.journal.load_audit()
    assert max(len(field) for row in audit for field in row) <= 512
