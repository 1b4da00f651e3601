"""The data types of ISA-95 Job Control (OPC 10031-4, version 2), served in their official namespace
with their official numeric ids, so that an MES that speaks the standard decodes job orders and
responses from this server alone. Written from the specification's facts (docs/isa95.md), not
copied from the OPC Foundation's NodeSet2 file; a test holds what is served against that file.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import Server, ua
from asyncua.common.manage_nodes import create_data_type, create_encoding

JOBCONTROL_URI = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"

# Each structure's three encodings follow it in the namespace: (Default Binary, XML, JSON) at
# ENCODING + 0, 1, 2.
ENCODINGS = ("Default Binary", "Default XML", "Default JSON")

STRING, LOCALIZED, DATETIME = ua.ObjectIds.String, ua.ObjectIds.LocalizedText, ua.ObjectIds.DateTime
DECIMAL_STRING, EU, ANY = ua.ObjectIds.DecimalString, ua.ObjectIds.EUInformation, ua.ObjectIds.BaseDataType


@dataclass(frozen=True)
class Field:
    name: str
    data_type: int | str  # a base type's ObjectId, or the name of a structure defined here
    array: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Structure:
    name: str
    id: int
    encoding: int  # the id of its Default Binary encoding
    fields: tuple[Field, ...]


def _resource(name: str, id_: int, encoding: int, property_type: str) -> Structure:
    """Personnel, equipment and physical asset requirements share one shape, each its own type."""
    use = name.removeprefix("ISA95").removesuffix("DataType") + "Use"
    return Structure(name, id_, encoding, (
        Field("ID", STRING),
        Field("Description", LOCALIZED, array=True, optional=True),
        Field(use, STRING, optional=True),
        Field("Quantity", DECIMAL_STRING, optional=True),
        Field("EngineeringUnits", EU, optional=True),
        Field("Properties", property_type, array=True, optional=True),
    ))  # fmt: skip


def _valued(name: str, id_: int, encoding: int, children: str) -> Structure:
    """Properties and parameters: an id, a value of any type, and children of their own kind."""
    return Structure(name, id_, encoding, (
        Field("ID", STRING),
        Field("Value", ANY),
        Field("Description", LOCALIZED, array=True, optional=True),
        Field("EngineeringUnits", EU, optional=True),
        Field(children, name, array=True, optional=True),
    ))  # fmt: skip


PARAMETER, STATE, JOB_ORDER = "ISA95ParameterDataType", "ISA95StateDataType", "ISA95JobOrderDataType"
PERSONNEL, EQUIPMENT, ASSET = "ISA95PersonnelDataType", "ISA95EquipmentDataType", "ISA95PhysicalAssetDataType"
MATERIAL, WORK_MASTER = "ISA95MaterialDataType", "ISA95WorkMasterDataType"

# In dependency order: a structure is defined after every structure its fields use.
STRUCTURES: tuple[Structure, ...] = (
    _valued("ISA95PropertyDataType", 3002, 5002, "Subproperties"),
    _valued(PARAMETER, 3003, 5005, "Subparameters"),
    _resource(EQUIPMENT, 3005, 5008, "ISA95PropertyDataType"),
    _resource(PERSONNEL, 3011, 5020, "ISA95PropertyDataType"),
    _resource(ASSET, 3012, 5023, "ISA95PropertyDataType"),
    Structure(MATERIAL, 3010, 5017, (
        Field("MaterialClassID", STRING, optional=True),
        Field("MaterialDefinitionID", STRING, optional=True),
        Field("MaterialLotID", STRING, optional=True),
        Field("MaterialSublotID", STRING, optional=True),
        Field("Description", LOCALIZED, array=True, optional=True),
        Field("MaterialUse", STRING, optional=True),
        Field("Quantity", DECIMAL_STRING, optional=True),
        Field("EngineeringUnits", EU, optional=True),
        Field("Properties", "ISA95PropertyDataType", array=True, optional=True),
    )),
    Structure(WORK_MASTER, 3007, 5011, (
        Field("ID", STRING),
        Field("Description", LOCALIZED, optional=True),
        Field("Parameters", PARAMETER, array=True, optional=True),
    )),
    Structure(STATE, 3006, 5029, (
        Field("BrowsePath", ua.ObjectIds.RelativePath),
        Field("StateText", LOCALIZED),
        Field("StateNumber", ua.ObjectIds.UInt32),
    )),
    Structure(JOB_ORDER, 3008, 5014, (
        Field("JobOrderID", STRING),
        Field("Description", LOCALIZED, array=True, optional=True),
        Field("WorkMasterID", WORK_MASTER, array=True, optional=True),
        Field("StartTime", DATETIME, optional=True),
        Field("EndTime", DATETIME, optional=True),
        Field("Priority", ua.ObjectIds.Int16, optional=True),
        Field("JobOrderParameters", PARAMETER, array=True, optional=True),
        Field("PersonnelRequirements", PERSONNEL, array=True, optional=True),
        Field("EquipmentRequirements", EQUIPMENT, array=True, optional=True),
        Field("PhysicalAssetRequirements", ASSET, array=True, optional=True),
        Field("MaterialRequirements", MATERIAL, array=True, optional=True),
    )),
    Structure("ISA95JobOrderAndStateDataType", 3015, 5032, (
        Field("JobOrder", JOB_ORDER),
        Field("State", STATE, array=True),
    )),
    Structure("ISA95JobResponseDataType", 3013, 5026, (
        Field("JobResponseID", STRING),
        Field("Description", LOCALIZED, optional=True),
        Field("JobOrderID", STRING),
        Field("StartTime", DATETIME, optional=True),
        Field("EndTime", DATETIME, optional=True),
        Field("JobState", STATE, array=True),
        Field("JobResponseData", PARAMETER, array=True, optional=True),
        Field("PersonnelActuals", PERSONNEL, array=True, optional=True),
        Field("EquipmentActuals", EQUIPMENT, array=True, optional=True),
        Field("PhysicalAssetActuals", ASSET, array=True, optional=True),
        Field("MaterialActuals", MATERIAL, array=True, optional=True),
    )),
)  # fmt: skip


_STRUCTURE_IDS = {s.name: s.id for s in STRUCTURES}  # every job order and list entry asks for several


def structure(name: str, ns: int) -> type:
    """The class asyncua made for the structure `name` of the server whose Job Control namespace is
    `ns`: looked up by data type id, as `ua.<name>` stays bound to the first server's class when a
    process holds two (tests; an export beside a bridge) and would encode with its ids."""
    return ua.get_type(ua.NodeId(_STRUCTURE_IDS[name], ns))


def definition(structure: Structure, ns: int) -> ua.StructureDefinition:
    """The DataTypeDefinition a client builds its decoder from."""
    ids = {s.name: s.id for s in STRUCTURES}

    def data_type(field: Field) -> ua.NodeId:
        if isinstance(field.data_type, str):
            return ua.NodeId(ids[field.data_type], ns)
        return ua.NodeId(field.data_type)

    optional = any(f.optional for f in structure.fields)
    kind = ua.StructureType.StructureWithOptionalFields if optional else ua.StructureType.Structure
    return ua.StructureDefinition(
        DefaultEncodingId=ua.NodeId(structure.encoding, ns),
        BaseDataType=ua.NodeId(ua.ObjectIds.Structure),
        StructureType=kind,
        Fields=[
            ua.StructureField(
                Name=f.name,
                DataType=data_type(f),
                ValueRank=ua.ValueRank.OneDimension if f.array else ua.ValueRank.Scalar,
                ArrayDimensions=[0] if f.array else None,
                IsOptional=f.optional,
            )
            for f in structure.fields
        ],
    )


async def build_isa95_types(server: Server) -> int:
    """Add the Job Control data types to `server`, make it able to encode them, and return the
    namespace index of JOBCONTROL_URI."""
    ns = await server.register_namespace(JOBCONTROL_URI)
    base = server.nodes.base_structure_type
    for structure in STRUCTURES:
        node = await create_data_type(base, ua.NodeId(structure.id, ns), ua.QualifiedName(structure.name, ns))
        for offset, name in enumerate(ENCODINGS):
            await create_encoding(node, ua.NodeId(structure.encoding + offset, ns), ua.QualifiedName(name, 0))
        await node.write_data_type_definition(definition(structure, ns))
    await server.load_data_type_definitions()
    return ns
