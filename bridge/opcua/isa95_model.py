"""The object types of ISA-95 Job Control v2 that this server offers, at their official ids: the job
order receiver (a finite state machine with its methods, states and transitions), the job response
provider, and the job order status event type (abstract; `JOB_EVENT` is the concrete one emitted).
Written from the specification's facts like isa95_types.py; a test holds them against the official
NodeSet2. The sub-state machine types (1001, 1005, 1007, 1008) and the response receiver (1004) are
not offered: this line reports top-level job states and sends no responses of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import Node, Server, ua

from bridge.opcua.isa95_types import build_isa95_types
from bridge.opcua.uatypes import tid

RECEIVER_TYPE, PROVIDER_TYPE, STATUS_EVENT_TYPE, SUBSTATES_TYPE = 1002, 1003, 1006, 1008
JOB_ORDER, STATE, JOB_RESPONSE = 3008, 3006, 3013  # data type ids (isa95_types.STRUCTURES)
JOB_ORDER_AND_STATE, WORK_MASTER = 3015, 3007
JOB_EVENT = "JobOrderStatusEventType"  # the concrete subtype, in the line's type namespace


@dataclass(frozen=True)
class Arg:
    name: str
    data_type: int  # ns=0 id, or a Job Control data type id when `ours`
    ours: bool = False
    array: bool = False


@dataclass(frozen=True)
class Method:
    name: str
    id: int
    inputs_id: int  # its OutputArguments property is inputs_id + 1
    inputs: tuple[Arg, ...]
    outputs: tuple[Arg, ...]
    mandatory: bool = False


COMMENT = Arg("Comment", ua.ObjectIds.LocalizedText, array=True)
RETURN_STATUS = Arg("ReturnStatus", ua.ObjectIds.UInt64)
BY_ORDER = (Arg("JobOrder", JOB_ORDER, ours=True), COMMENT)
BY_ID = (Arg("JobOrderID", ua.ObjectIds.String), COMMENT)

RECEIVER_METHODS = (
    Method("Store", 7001, 6040, BY_ORDER, (RETURN_STATUS,)),
    Method("StoreAndStart", 7004, 6051, BY_ORDER, (RETURN_STATUS,)),
    Method("Start", 7005, 6053, BY_ID, (RETURN_STATUS,)),
    Method("Stop", 7006, 6055, BY_ID, (RETURN_STATUS,)),
    Method("Pause", 7007, 6057, BY_ID, (RETURN_STATUS,)),
    Method("Resume", 7008, 6059, BY_ID, (RETURN_STATUS,)),
    Method("Update", 7009, 6061, BY_ORDER, (RETURN_STATUS,)),
    Method("Abort", 7010, 6063, BY_ID, (RETURN_STATUS,)),
    Method("Cancel", 7011, 6065, BY_ID, (RETURN_STATUS,)),
    Method("Clear", 7012, 6067, BY_ID, (RETURN_STATUS,)),
    Method("RevokeStart", 7013, 6069, BY_ID, (RETURN_STATUS,)),
)
PROVIDER_METHODS = (
    Method(
        "RequestJobResponseByJobOrderID", 7002, 6042,
        (Arg("JobOrderID", ua.ObjectIds.String),),
        (Arg("JobResponse", JOB_RESPONSE, ours=True), RETURN_STATUS), mandatory=True,
    ),
    Method(
        "RequestJobResponseByJobOrderState", 7014, 6016,
        (Arg("JobOrderState", STATE, ours=True, array=True),),
        (Arg("JobResponses", JOB_RESPONSE, ours=True, array=True), RETURN_STATUS), mandatory=True,
    ),
)  # fmt: skip

JOB_STATES = ("NotAllowedToStart", "AllowedToStart", "Running", "Interrupted", "Ended", "Aborted")
# (TransitionNumber, from state, to state, the method that causes it)
JOB_TRANSITIONS = (
    (1, "NotAllowedToStart", "NotAllowedToStart", "Update"),
    (2, "NotAllowedToStart", "AllowedToStart", "Start"),
    (3, "AllowedToStart", "NotAllowedToStart", "RevokeStart"),
    (4, "AllowedToStart", "AllowedToStart", "Update"),
    (5, "AllowedToStart", "Running", None), (6, "Running", "Interrupted", "Pause"),
    (7, "Running", "Ended", "Stop"), (8, "Running", "Aborted", "Abort"),
    (9, "Interrupted", "Aborted", "Abort"),
    (10, "Interrupted", "Running", "Resume"), (11, "Interrupted", "Ended", "Stop"),
    (12, "NotAllowedToStart", "Aborted", "Abort"), (13, "AllowedToStart", "Aborted", "Abort"),
)  # fmt: skip


@dataclass(frozen=True)
class Machine:
    """A finite state machine type: each state's (id, StateNumber id) in the order of its number
    (from 1), each transition's (id, TransitionNumber id, number, from, to)."""

    name: str
    id: int
    states: tuple[tuple[str, int, int], ...]
    transitions: tuple[tuple[int, int, int, str, str], ...]


def _job_machine(
    name: str, id_: int, states: tuple[tuple[int, int], ...], transitions: dict[int, tuple[int, int]]
) -> Machine:
    """The receiver's job states and transitions, at the ids of one of the two receiver types."""
    return Machine(
        name, id_,
        tuple((state, *ids) for state, ids in zip(JOB_STATES, states, strict=True)),
        tuple((*transitions[n], n, source, target) for n, source, target, _ in JOB_TRANSITIONS),
    )  # fmt: skip


RECEIVER = _job_machine(
    "ISA95JobOrderReceiverObjectType", RECEIVER_TYPE,
    ((5035, 6071), (5036, 6072), (5037, 6073), (5038, 6074), (5039, 6075), (5040, 6076)),
    {1: (5041, 6077), 2: (5042, 6078), 3: (5043, 6079), 4: (5044, 6080), 5: (5045, 6081), 6: (5046, 6082),
     7: (5047, 6083), 8: (5048, 6084), 9: (5049, 6085), 10: (5050, 6086), 11: (5051, 6087), 12: (5084, 6009),
     13: (5085, 6010)},
)  # fmt: skip
SUBSTATES = _job_machine(
    "ISA95JobOrderReceiverSubStatesType", SUBSTATES_TYPE,
    ((5063, 6100), (5064, 6101), (5065, 6102), (5066, 6103), (5067, 6104), (5068, 6105)),
    {1: (5069, 6106), 2: (5070, 6107), 3: (5071, 6108), 4: (5072, 6109), 5: (5073, 6110), 6: (5074, 6111),
     7: (5075, 6112), 8: (5076, 6113), 9: (5077, 6114), 10: (5078, 6115), 11: (5079, 6116), 12: (5087, 6012),
     13: (5086, 6011)},
)  # fmt: skip
PREPARE = Machine(
    "ISA95PrepareStateMachineType", 1001,
    (("Waiting", 5000, 6000), ("Ready", 5052, 6089), ("Loaded", 5053, 6090)),
    ((5054, 6091, 1, "Waiting", "Ready"), (5055, 6092, 2, "Ready", "Loaded"),
     (5088, 6013, 3, "Ready", "Waiting"), (5089, 6014, 4, "Loaded", "Ready"),
     (5090, 6015, 5, "Loaded", "Waiting")),
)  # fmt: skip
ENDED = Machine(
    "ISA95EndedStateMachineType", 1005, (("Completed", 5056, 6093), ("Closed", 5057, 6094)),
    ((5058, 6095, 1, "Completed", "Closed"),),
)  # fmt: skip
INTERRUPTED = Machine(
    "ISA95InterruptedStateMachineType", 1007, (("Held", 5059, 6096), ("Suspended", 5060, 6097)),
    ((5061, 6098, 1, "Held", "Suspended"), (5062, 6099, 2, "Suspended", "Held")),
)  # fmt: skip
# The sub-state machines of the sub-states receiver: (browse name, id, its machine, CurrentState id,
# CurrentState's Id id, the job state it refines). A job's sub-state names its machine in BrowsePath.
SUB_MACHINES = (
    ("NotAllowedToStartSubstates", 5080, PREPARE, 6001, 6002, "NotAllowedToStart"),
    ("AllowedToStartSubstates", 5081, PREPARE, 6003, 6004, "AllowedToStart"),
    ("EndedSubstates", 5082, ENDED, 6005, 6006, "Ended"),
    ("InterruptedSubstates", 5083, INTERRUPTED, 6007, 6008, "Interrupted"),
)
# (name, id, data type, ours, array, property): the receiver's variables, all mandatory
RECEIVER_VARIABLES = (
    ("JobOrderList", 6033, JOB_ORDER_AND_STATE, True, True, False),
    ("WorkMaster", 6034, WORK_MASTER, True, True, False),
    ("MaterialClassID", 6035, ua.ObjectIds.String, False, True, False),
    ("MaterialDefinitionID", 6036, ua.ObjectIds.String, False, True, False),
    ("EquipmentID", 6037, ua.ObjectIds.String, False, True, False),
    ("PhysicalAssetID", 6038, ua.ObjectIds.String, False, True, False),
    ("PersonnelID", 6039, ua.ObjectIds.String, False, True, False),
    ("MaxDownloadableJobOrders", 6088, ua.ObjectIds.UInt16, False, False, True),
)
# (name, id, data type, array): the status event's fields
EVENT_FIELDS = (("JobOrder", 6047, JOB_ORDER, False), ("JobState", 6048, STATE, True),
                ("JobResponse", 6049, JOB_RESPONSE, False))  # fmt: skip


class JobControlTypes:
    """Adds the object types to a server that already has the data types (build_isa95_types)."""

    def __init__(self, server: Server, ns: int) -> None:
        self.server, self.ns = server, ns

    def id(self, number: int) -> ua.NodeId:
        return ua.NodeId(number, self.ns)

    def qname(self, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self.ns)

    async def build(self, event_type: ua.NodeId, event_name: ua.QualifiedName) -> None:
        """The types, and the concrete status event type at `event_type`."""
        fsm = self.server.get_node(ua.ObjectIds.FiniteStateMachineType)
        event = await self.server.nodes.base_event_type.add_object_type(
            self.id(STATUS_EVENT_TYPE), self.qname("ISA95JobOrderStatusEventType")
        )
        await event.write_attribute(ua.AttributeIds.IsAbstract, ua.DataValue(True))
        for name, number, data_type, array in EVENT_FIELDS:
            await self._variable(event, name, number, self.id(data_type), array, True)
        await event.add_object_type(event_type, event_name)
        for machine in (PREPARE, ENDED, INTERRUPTED):
            await self._machine(
                await fsm.add_object_type(self.id(machine.id), self.qname(machine.name)), machine
            )
        receiver = await fsm.add_object_type(self.id(RECEIVER_TYPE), self.qname(RECEIVER.name))
        for name, number, data_type, ours, array, is_property in RECEIVER_VARIABLES:
            await self._variable(receiver, name, number, self._type(data_type, ours), array, is_property)
        methods = {m.name: await self._method(receiver, m) for m in RECEIVER_METHODS}
        await self._machine(receiver, RECEIVER, methods, event)
        substates = await receiver.add_object_type(self.id(SUBSTATES_TYPE), self.qname(SUBSTATES.name))
        states = await self._machine(substates, SUBSTATES, methods, event)
        for name, number, machine, current, current_id, refines in SUB_MACHINES:
            sub = await self._add(substates, number, name, self.id(machine.id))
            await sub.set_modelling_rule(False)
            await states[refines].add_reference(sub.nodeid, ua.ObjectIds.HasSubStateMachine)
            state = await self._add(
                sub, current, "CurrentState", ua.ObjectIds.FiniteStateVariableType, ua.LocalizedText("")
            )
            await self._add(
                state, current_id, "Id", ua.ObjectIds.PropertyType, ua.NodeId(), ua.ObjectIds.HasProperty
            )
        base = self.server.nodes.base_object_type
        provider_name = self.qname("ISA95JobResponseProviderObjectType")
        provider = await base.add_object_type(self.id(PROVIDER_TYPE), provider_name)
        await provider.add_reference(event.nodeid, ua.ObjectIds.GeneratesEvent)
        response_list = await provider.add_variable(
            self.id(6050), self.qname("JobOrderResponseList"), [], ua.VariantType.ExtensionObject,
            datatype=self.id(JOB_RESPONSE),
        )  # fmt: skip
        await _shape(response_list, array=True, mandatory=False)
        for method in PROVIDER_METHODS:
            await self._method(provider, method)

    async def _machine(
        self,
        owner: Node,
        machine: Machine,
        methods: dict[str, Node] | None = None,
        effect: Node | None = None,
    ) -> dict[str, Node]:
        """A state machine type's states and transitions; on a receiver, their causes and effect."""
        states = {}
        for position, (name, number, number_id) in enumerate(machine.states, start=1):
            states[name] = await self._add(owner, number, name, ua.ObjectIds.StateType)
            await self._number(states[name], number_id, "StateNumber", position)
        causes = {n: cause for n, _, _, cause in JOB_TRANSITIONS}
        for number, number_id, position, source, target in machine.transitions:
            transition = await self._add(
                owner, number, f"From{source}To{target}", ua.ObjectIds.TransitionType
            )
            await self._number(transition, number_id, "TransitionNumber", position)
            await transition.add_reference(states[source].nodeid, ua.ObjectIds.FromState)
            await transition.add_reference(states[target].nodeid, ua.ObjectIds.ToState)
            if effect is not None:
                await transition.add_reference(effect.nodeid, ua.ObjectIds.HasEffect)
            if methods is not None and causes[position] is not None:
                await transition.add_reference(methods[causes[position]].nodeid, ua.ObjectIds.HasCause)
        return states

    def _type(self, data_type: int, ours: bool) -> ua.NodeId:
        return self.id(data_type) if ours else ua.NodeId(data_type)

    async def _variable(
        self, parent: Node, name: str, number: int, data_type: ua.NodeId, array: bool, is_property: bool
    ) -> None:
        add = parent.add_property if is_property else parent.add_variable
        if data_type.NamespaceIndex:
            value = ua.Variant([] if array else None, ua.VariantType.ExtensionObject, is_array=array)
        else:  # String[], UInt16: a built-in type's id is its VariantType
            value = ua.Variant([] if array else ua.UInt16(0), ua.VariantType(data_type.Identifier))
        node = await add(self.id(number), self.qname(name), value, datatype=data_type)
        await _shape(node, array=array, mandatory=True)

    async def _method(self, parent: Node, method: Method) -> Node:
        node = await parent.add_method(self.id(method.id), self.qname(method.name), None, [], [])
        await node.set_modelling_rule(method.mandatory)
        lists = (("InputArguments", method.inputs), ("OutputArguments", method.outputs))
        for offset, (name, args) in enumerate(lists):
            prop = await node.add_property(
                self.id(method.inputs_id + offset), ua.QualifiedName(name, 0),
                [self._argument(a) for a in args], ua.VariantType.ExtensionObject,
                datatype=ua.NodeId(ua.ObjectIds.Argument),
            )  # fmt: skip
            await prop.write_value_rank(ua.ValueRank.OneDimension)
            await prop.write_array_dimensions([len(args)])  # as the specification's file writes it
            await prop.set_modelling_rule(True)
        return node

    def _argument(self, arg: Arg) -> ua.Argument:
        return ua.Argument(
            Name=arg.name,
            DataType=self._type(arg.data_type, arg.ours),
            ValueRank=ua.ValueRank.OneDimension if arg.array else ua.ValueRank.Scalar,
            ArrayDimensions=[0] if arg.array else [],
        )

    async def _add(
        self,
        parent: Node,
        number: int,
        name: str,
        type_definition: int | ua.NodeId,
        value: object = None,
        reference: int = ua.ObjectIds.HasComponent,
    ) -> Node:
        """An object (or, with a `value`, a variable of that value's type) without the children
        its type would instantiate: a state machine type's states, transitions and sub-state
        machines are described by their own members only. Names of the base model (CurrentState,
        Id) stay in namespace 0, as the specification's file writes them."""
        base_name = name in ("CurrentState", "Id")
        attributes: ua.ObjectAttributes | ua.VariableAttributes = ua.ObjectAttributes(
            DisplayName=ua.LocalizedText(name)
        )
        if value is not None:
            variant = ua.Variant(value)
            attributes = ua.VariableAttributes(
                DisplayName=ua.LocalizedText(name), Value=ua.DataValue(variant),
                DataType=ua.NodeId(variant.VariantType.value), ValueRank=ua.ValueRank.Scalar,
                AccessLevel=ua.AccessLevel.CurrentRead.mask, UserAccessLevel=ua.AccessLevel.CurrentRead.mask,
            )  # fmt: skip
        item = ua.AddNodesItem(
            ParentNodeId=parent.nodeid,
            ReferenceTypeId=ua.NodeId(reference),
            RequestedNewNodeId=self.id(number),
            BrowseName=ua.QualifiedName(name, 0) if base_name else self.qname(name),
            NodeClass=ua.NodeClass.Object if value is None else ua.NodeClass.Variable,
            NodeAttributes=attributes,
            TypeDefinition=type_definition
            if isinstance(type_definition, ua.NodeId)
            else ua.NodeId(type_definition),
        )
        (result,) = await parent.session.add_nodes([item])
        result.StatusCode.check()
        node = self.server.get_node(result.AddedNodeId)
        if base_name:
            await node.set_modelling_rule(True)
        return node

    async def _number(self, parent: Node, number_id: int, name: str, value: int) -> None:
        prop = await parent.add_property(
            self.id(number_id), ua.QualifiedName(name, 0), ua.UInt32(value), ua.VariantType.UInt32
        )
        await prop.set_modelling_rule(True)


async def _shape(node: Node, *, array: bool, mandatory: bool) -> None:
    if array:
        await node.write_value_rank(ua.ValueRank.OneDimension)
        await node.write_array_dimensions([0])
    await node.set_modelling_rule(mandatory)


async def build_job_control(server: Server, types_ns: int) -> int:
    """The Job Control data and object types, the concrete status event type in `types_ns`; the
    Job Control namespace index."""
    ns = await build_isa95_types(server)
    await JobControlTypes(server, ns).build(tid(types_ns, JOB_EVENT), ua.QualifiedName(JOB_EVENT, types_ns))
    return ns
