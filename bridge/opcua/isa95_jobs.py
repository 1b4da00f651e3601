"""What ISA-95 Job Control words mean on this line: a product of the mapping is a work master and
its options are the work master's parameters; a job order is an order request; an order's state is
a job state. Pure translations (docs/isa95.md "How a job maps to an order"), so the job order
receiver validates a job exactly as `SubmitOrder` validates an order.

The structures are the classes `build_isa95_types` made from the served definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncua import ua

from bridge.domain.model import Order, OrderState, StepPhase
from bridge.domain.orders import OrderRequest
from bridge.errors import OrderRejected
from bridge.mapping.model import LineMapping, Option
from bridge.opcua.isa95_types import JOB_ORDER, MATERIAL, PARAMETER, STATE, WORK_MASTER, structure
from bridge.opcua.uatypes import eu_information

# ReturnStatus bits (version 2): the outcome of a Job Control call is in these, the call is Good.
OK = 1 << 0
UNKNOWN_JOB_ORDER_ID = 1 << 1
INVALID_JOB_ORDER_STATUS = 1 << 3
UNABLE_TO_ACCEPT = 1 << 4
INVALID_REQUEST = 1 << 32

# Top-level job states (StateNumber).
NOT_ALLOWED_TO_START, ALLOWED_TO_START, RUNNING, INTERRUPTED, ENDED, ABORTED = 1, 2, 3, 4, 5, 6
STATE_NAMES = {
    NOT_ALLOWED_TO_START: "NotAllowedToStart", ALLOWED_TO_START: "AllowedToStart", RUNNING: "Running",
    INTERRUPTED: "Interrupted", ENDED: "Ended", ABORTED: "Aborted",
}  # fmt: skip

RESPONSE, AND_STATE = "ISA95JobResponseDataType", "ISA95JobOrderAndStateDataType"

# A job order's MaterialRequirements entry with this MaterialUse carries the quantity to make.
PRODUCED = "Produced"


def _variant(value: Any, option: Option) -> ua.Variant:
    kinds = {
        "bool": ua.VariantType.Boolean, "string": ua.VariantType.String,
        "integer": ua.VariantType.Int32, "number": ua.VariantType.Double,
    }  # fmt: skip
    if option.type == "enum":
        kind = ua.VariantType.String if isinstance(value, str) else ua.VariantType.Int32
    else:
        kind = kinds[option.type]
    if value is None:
        return ua.Variant(None, ua.VariantType.Null)
    return ua.Variant(float(value) if kind == ua.VariantType.Double else value, kind)


def _allowed(option: Option) -> str:
    if option.values is not None:
        return "one of " + ", ".join(map(str, option.values))
    if option.type == "string":
        return f"at most {option.max_length} {option.charset.replace('_', ' ')} characters"
    bounds = []
    if option.min is not None:
        bounds.append(f">= {option.min:g}")
    if option.max is not None:
        bounds.append(f"<= {option.max:g}")
    return " ".join([option.type, " and ".join(bounds)]).strip()


def work_masters(mapping: LineMapping, ns: int) -> list[Any]:
    """One work master per product: its options as parameters, each with its default as Value and
    its description and allowed values (the spec has no field for a range: they are a second
    Description text, in words an operator reads)."""
    parameter, master = structure(PARAMETER, ns), structure(WORK_MASTER, ns)
    masters = []
    for name, product in mapping.products.items():
        parameters = [
            parameter(
                ID=option_name,
                Value=_variant(option.default, option),
                Description=[
                    ua.LocalizedText(option.description or option_name),
                    ua.LocalizedText(_allowed(option)),
                ],
                EngineeringUnits=eu_information(option.unit) if option.unit else None,
            )
            for option_name, option in product.options.items()
        ]
        description = ua.LocalizedText(product.description or name)
        masters.append(master(ID=name, Description=description, Parameters=parameters))
    return masters


def _quantity(materials: Sequence[Any] | None) -> int | None:
    produced = [m for m in materials or [] if m.MaterialUse == PRODUCED]
    if not produced:
        return None
    if len(produced) > 1:
        raise OrderRejected(f"at most one entry with MaterialUse {PRODUCED!r}", field="MaterialRequirements")
    text = produced[0].Quantity
    try:
        quantity = float(text)
    except (TypeError, ValueError):
        raise OrderRejected(f"Quantity {text!r} is not a number", field="MaterialRequirements") from None
    if not quantity.is_integer():
        reason = f"Quantity must be a whole number of units, got {text}"
        raise OrderRejected(reason, field="MaterialRequirements")
    return int(quantity)


def order_request(job_order: Any) -> OrderRequest:
    """The order a job order asks for, or OrderRejected naming the job order's field. The request
    still goes through `validate_order` (options, ranges, quantity, priority) as any order does."""
    masters = job_order.WorkMasterID or []
    if len(masters) != 1:
        reason = f"exactly one work master (a product of the line) is required, got {len(masters)}"
        raise OrderRejected(reason, field="WorkMasterID")
    options: dict[str, Any] = {}
    for index, parameter in enumerate(job_order.JobOrderParameters or []):
        if not isinstance(parameter.ID, str) or not parameter.ID:
            raise OrderRejected(
                f"parameter {index} has no ID (an option of the work master)", field="JobOrderParameters"
            )
        if parameter.ID in options:
            raise OrderRejected("given twice", field=f"JobOrderParameters.{parameter.ID}")
        if parameter.Subparameters:
            reason = "sub-parameters are not used on this line"
            raise OrderRejected(reason, field=f"JobOrderParameters.{parameter.ID}")
        value = parameter.Value
        options[parameter.ID] = value.Value if isinstance(value, ua.Variant) else value
    return OrderRequest(
        order_id=job_order.JobOrderID,
        product=masters[0].ID,
        options=options,
        quantity=_quantity(job_order.MaterialRequirements),
        priority=0 if job_order.Priority is None else job_order.Priority,
    )


def job_order(order: Order, mapping: LineMapping, ns: int) -> Any:
    """The job order as the line holds it, whichever door it came in by (Job Control or
    SubmitOrder): its work master, every option as a parameter, its priority and quantity."""
    product = mapping.products.get(order.product)
    parameter = structure(PARAMETER, ns)
    parameters = [
        parameter(ID=name, Value=_variant(value, product.options[name]))
        if product is not None and name in product.options
        else parameter(ID=name, Value=_any(value))
        for name, value in order.options.items()
    ]
    return structure(JOB_ORDER, ns)(
        JobOrderID=order.order_id,
        WorkMasterID=[structure(WORK_MASTER, ns)(ID=order.product)],
        Priority=ua.Int16(order.priority),
        JobOrderParameters=parameters,
        MaterialRequirements=[
            structure(MATERIAL, ns)(MaterialDefinitionID=order.product, MaterialUse=PRODUCED,
                                     Quantity=str(order.quantity))
        ],
    )  # fmt: skip


def job_response(order: Order, mapping: LineMapping, ns: int) -> Any:
    """What the line did for a job: for each unit its serial and, per station it passed, the
    result code and every result with its engineering units, as flat parameters named
    `unit<index>.<station>.<result>` (an MES maps them without walking sub-parameters)."""
    parameter = structure(PARAMETER, ns)
    data = [parameter(ID=f"unit{u.index}.serial", Value=_any(u.serial)) for u in order.units]
    for step in order.steps:
        if step.phase == StepPhase.BEGUN or step.result_code is None:
            continue
        prefix = f"unit{step.unit_index}.{step.station}"
        data.append(parameter(
            ID=f"{prefix}.result_code", Value=ua.Variant(step.result_code, ua.VariantType.UInt32)
        ))  # fmt: skip
        fields = mapping.station_type(step.station).results if step.station in mapping.stations else {}
        for name, value in (step.results or {}).items():
            unit = getattr(fields.get(name), "unit", None)
            eu = eu_information(unit) if unit else None
            data.append(parameter(ID=f"{prefix}.{name}", Value=_any(value), EngineeringUnits=eu))
    started = min((s.started_at for s in order.steps), default=None)
    return structure(RESPONSE, ns)(
        JobResponseID=order.order_id,
        JobOrderID=order.order_id,
        StartTime=started,
        EndTime=order.completed_at,
        JobState=job_state(order.state, ns),
        JobResponseData=data,
    )


def _any(value: Any) -> ua.Variant:
    if isinstance(value, bool):
        return ua.Variant(value, ua.VariantType.Boolean)
    if isinstance(value, int):
        return ua.Variant(value, ua.VariantType.Int64)
    if isinstance(value, float):
        return ua.Variant(value, ua.VariantType.Double)
    return ua.Variant(str(value), ua.VariantType.String)


def job_field(field: str) -> str:
    """An order's field named as the job order names it, for a refusal the MES can act on."""
    head, _, rest = field.partition(".")
    names = {"order_id": "JobOrderID", "product": "WorkMasterID", "options": "JobOrderParameters",
             "quantity": "MaterialRequirements", "priority": "Priority"}  # fmt: skip
    return names.get(head, head) + (f".{rest}" if rest else "")


def job_state(state: OrderState, ns: int) -> list[Any]:
    """An order's state as ISA95StateDataType[]: the top-level state first, its BrowsePath null as
    the spec requires, then its sub-state where this line has one, its BrowsePath the receiver's
    sub-state machine (`EndedSubstates`, in the Job Control namespace `ns`).

    stored is NotAllowedToStart/Ready (all it needs is a Start); received and queued are
    AllowedToStart/Ready (accepted, waiting for a station); running is Running; paused is
    Interrupted/Suspended (a deliberate decision, not a constraint); completed is Ended/Completed;
    faulted and cancelled are Aborted."""
    number = STATE_NUMBERS[state]
    states = [
        structure(STATE, ns)(StateText=ua.LocalizedText(STATE_NAMES[number]), StateNumber=ua.UInt32(number))
    ]
    sub = _SUBSTATE.get(state)
    if sub is not None:
        machine, text, sub_number = sub
        element = ua.RelativePathElement(
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasComponent), IncludeSubtypes=True,
            TargetName=ua.QualifiedName(machine, ns),
        )  # fmt: skip
        path = ua.RelativePath(Elements=[element])
        states.append(
            structure(STATE, ns)(
                BrowsePath=path, StateText=ua.LocalizedText(text), StateNumber=ua.UInt32(sub_number)
            )
        )
    return states


# An order state's sub-state: (the receiver's sub-state machine, the state's name, its number).
_SUBSTATE = {
    OrderState.STORED: ("NotAllowedToStartSubstates", "Ready", 2),
    OrderState.RECEIVED: ("AllowedToStartSubstates", "Ready", 2),
    OrderState.QUEUED: ("AllowedToStartSubstates", "Ready", 2),
    OrderState.PAUSED: ("InterruptedSubstates", "Suspended", 2),
    OrderState.COMPLETED: ("EndedSubstates", "Completed", 1),
}
STATE_NUMBERS = {  # an order state's top-level job state
    OrderState.RECEIVED: ALLOWED_TO_START, OrderState.QUEUED: ALLOWED_TO_START, OrderState.RUNNING: RUNNING,
    OrderState.COMPLETED: ENDED, OrderState.FAULTED: ABORTED, OrderState.CANCELLED: ABORTED,
    OrderState.STORED: NOT_ALLOWED_TO_START, OrderState.PAUSED: INTERRUPTED,
}  # fmt: skip
