"""A job order means an order on this line: products as work masters, options as parameters, the
same validation as SubmitOrder, refusals naming the job order's field, order states as job states."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import Server, ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import extensionobject_from_binary, extensionobject_to_binary

from bridge.domain.model import OrderState
from bridge.domain.orders import validate_order
from bridge.errors import OrderRejected
from bridge.opcua.isa95_jobs import (
    ABORTED,
    ALLOWED_TO_START,
    ENDED,
    job_field,
    job_state,
    order_request,
    work_masters,
)
from bridge.opcua.isa95_types import build_isa95_types


@pytest.fixture(scope="module", autouse=True)
def jc_ns() -> int:
    """The structure classes, made as a running bridge makes them (from the served definitions);
    the index of their namespace, by which the functions find them."""

    async def build() -> int:
        server = Server()
        await server.init()
        return await build_isa95_types(server)

    return asyncio.run(build())


def job(*parameters: tuple[str, ua.Variant], product: str | None = "AC-W", quantity: str | None = None, **kw):
    materials = None
    if quantity is not None:
        made = ua.ISA95MaterialDataType(MaterialUse="Produced", Quantity=quantity)
        materials = [made]
    return ua.ISA95JobOrderDataType(
        JobOrderID=kw.pop("job_id", "J-1"),
        WorkMasterID=[] if product is None else [ua.ISA95WorkMasterDataType(ID=product)],
        JobOrderParameters=[ua.ISA95ParameterDataType(ID=name, Value=value) for name, value in parameters],
        MaterialRequirements=materials,
        **kw,
    )


def job_from(given: dict) -> object:
    """A job order from a test case's plain values (the classes exist only once the types are built)."""
    given = dict(given)
    parameters = [(name, ua.Variant(value)) for name, value in given.pop("parameters", [])]
    return job(*parameters, **given)


def int32(value: int) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Int32)


def test_each_product_is_a_work_master_with_its_options_as_parameters(ac_mapping, jc_ns) -> None:
    masters = work_masters(ac_mapping, jc_ns)
    assert [m.ID for m in masters] == list(ac_mapping.products)
    (ac_w,) = masters
    parameters = {p.ID: p for p in ac_w.Parameters}
    assert list(parameters) == list(ac_mapping.products["AC-W"].options)
    capacity = parameters["capacity_btu"]
    assert capacity.Value == int32(12000)
    descriptions = [d.Text for d in capacity.Description]
    assert descriptions == ["Cooling capacity", "one of 9000, 12000, 18000, 24000"]
    assert capacity.EngineeringUnits.DisplayName.Text == "BTU/h"  # the option's unit, as UNECE 2I
    assert capacity.EngineeringUnits.UnitId == (ord("2") << 16) | (ord("I") << 8) | ord(" ")  # Part 8: padded
    assert parameters["panel_color"].EngineeringUnits is None
    assert parameters["wifi_module"].Value == ua.Variant(False, ua.VariantType.Boolean)
    assert parameters["engraving"].Description[1].Text == "at most 16 printable ascii characters"
    # what a client receives: the structure survives its binary encoding
    decoded = extensionobject_from_binary(Buffer(extensionobject_to_binary(ac_w)))
    assert decoded == ac_w


def test_a_job_order_becomes_the_order_it_asks_for(ac_mapping) -> None:
    request = order_request(
        job(("capacity_btu", int32(24000)), ("wifi_module", ua.Variant(True)), quantity="3", Priority=5)
    )
    order = validate_order(ac_mapping, request)
    assert (order.order_id, order.product, order.quantity, order.priority) == ("J-1", "AC-W", 3, 5)
    assert order.options["capacity_btu"] == 24000
    assert order.options["wifi_module"] is True
    assert order.options["panel_color"] == "white", "a parameter left out takes the option's default"
    assert validate_order(ac_mapping, order_request(job())).quantity == 1


@pytest.mark.parametrize(
    ("given", "field", "reason"),
    [
        ({"product": None}, "WorkMasterID", "exactly one work master"),
        ({"parameters": [("wifi_module", True), ("wifi_module", False)]}, "JobOrderParameters.wifi_module",
         "given twice"),
        ({"quantity": "2.5"}, "MaterialRequirements", "whole number"),
        ({"quantity": "many"}, "MaterialRequirements", "not a number"),
        ({"parameters": [("wifi_module", True), (None, 1)]}, "JobOrderParameters", "parameter 1 has no ID"),
    ],
)  # fmt: skip
def test_a_malformed_job_order_is_refused_naming_its_field(given, field, reason) -> None:
    with pytest.raises(OrderRejected) as refused:
        order_request(job_from(given))
    assert refused.value.field == field
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("given", "field", "reason"),
    [
        ({"parameters": [("capacity_btu", 13000)]}, "JobOrderParameters.capacity_btu", "must be one of 9000"),
        ({"parameters": [("turbo", True)]}, "JobOrderParameters.turbo", "unknown option"),
        ({"product": "AC-X"}, "WorkMasterID", "unknown product"),
        ({"quantity": "51"}, "MaterialRequirements", "must be 1 to 50"),
        ({"job_id": "J 1"}, "JobOrderID", "must be 1-32 characters"),
    ],
)  # fmt: skip
def test_a_job_the_line_cannot_make_is_refused_as_submit_order_refuses_it(ac_mapping, given, field, reason):
    with pytest.raises(OrderRejected) as refused:
        validate_order(ac_mapping, order_request(job_from(given)))
    assert job_field(refused.value.field) == field
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("state", "number", "text", "sub"),
    [
        (OrderState.STORED, 1, "NotAllowedToStart", ("NotAllowedToStartSubstates", "Ready", 2)),
        (OrderState.QUEUED, ALLOWED_TO_START, "AllowedToStart", ("AllowedToStartSubstates", "Ready", 2)),
        (OrderState.RUNNING, 3, "Running", None),
        (OrderState.PAUSED, 4, "Interrupted", ("InterruptedSubstates", "Suspended", 2)),
        (OrderState.COMPLETED, ENDED, "Ended", ("EndedSubstates", "Completed", 1)),
        (OrderState.FAULTED, ABORTED, "Aborted", None),
        (OrderState.CANCELLED, ABORTED, "Aborted", None),
    ],
)
def test_an_order_state_is_reported_as_a_job_state_with_its_sub_state(
    state, number, text, sub, jc_ns
) -> None:
    top, *subs = job_state(state, jc_ns)
    assert (top.StateNumber, top.StateText.Text) == (number, text)
    assert not top.BrowsePath.Elements, "the top-level state's BrowsePath is null"
    got = [(s.BrowsePath.Elements[0].TargetName, s.StateText.Text, s.StateNumber) for s in subs]
    assert got == ([] if sub is None else [(ua.QualifiedName(sub[0], jc_ns), sub[1], sub[2])])
