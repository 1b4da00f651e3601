"""The ISA-95 Job Control data types as the bridge serves them, held against the OPC Foundation's own
NodeSet2 file (shipped in the npm package node-opcua-nodesets beside node-opcua): every data type
the bridge offers in that namespace must have the official id, name, supertype, encodings and
fields; and a client that knows nothing but the server decodes a job order from it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from asyncua import ua

from bridge.opcua.isa95_types import JOBCONTROL_URI, STRUCTURES
from bridge.opcua.nodeset import export_nodeset
from tests.integration.conftest import NODE_DIR
from tests.integration.opcua_rig import opcua_rig

OFFICIAL = NODE_DIR / "node_modules/node-opcua-nodesets/nodesets/opc.ua.isa95-jobcontrol.nodeset2.xml"
UA = {"u": "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"}


@dataclass(frozen=True)
class OfficialType:
    name: str
    supertype: str
    encodings: dict[str, str]  # browse name -> node id
    fields: list[tuple[str, str, int, list[int], bool]]  # name, data type, value rank, dims, optional
    structure_type: str


def official_data_types() -> dict[str, OfficialType]:
    """The file's data types, by node id in its own numbering (ns=1 is the Job Control namespace)."""
    if not OFFICIAL.is_file():
        message = f"{OFFICIAL.name} not found: `make test` installs node-opcua (and its nodesets) with npm"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = ET.parse(OFFICIAL).getroot()
    aliases = {a.get("Alias"): a.text for a in root.find("u:Aliases", UA)}
    encodings = {o.get("NodeId"): o.get("BrowseName") for o in root.findall("u:UAObject", UA)}
    found = {}

    def kind(ref: ET.Element) -> str | None:
        return ref.get("ReferenceType")

    for node in root.findall("u:UADataType", UA):
        refs = node.find("u:References", UA)
        definition = node.find("u:Definition", UA)
        fields = [
            (
                f.get("Name"),
                aliases.get(f.get("DataType", "i=24"), f.get("DataType", "i=24")),
                int(f.get("ValueRank", "-1")),
                [int(d) for d in f.get("ArrayDimensions", "").split(",") if d],
                f.get("IsOptional") == "true",
            )
            for f in definition.findall("u:Field", UA)
        ]
        found[node.get("NodeId")] = OfficialType(
            name=node.get("BrowseName").split(":", 1)[1],
            supertype=next(aliases.get(r.text, r.text) for r in refs if kind(r) == "HasSubtype"),
            encodings={encodings[r.text]: r.text for r in refs if kind(r) == "HasEncoding"},
            fields=fields,
            structure_type="StructureWithOptionalFields" if any(f[4] for f in fields) else "Structure",
        )
    return found


def in_file_numbering(nodeid: ua.NodeId, ns: int) -> str:
    """A served node id written as the official file writes it (its namespace as ns=1)."""
    if nodeid.NamespaceIndex == 0:
        return f"i={nodeid.Identifier}"
    assert nodeid.NamespaceIndex == ns, f"{nodeid} is in neither the base nor the Job Control namespace"
    return f"ns=1;i={nodeid.Identifier}"


@pytest.fixture
async def rig(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        yield rig


async def test_every_served_data_type_matches_the_official_nodeset(rig) -> None:
    official = official_data_types()
    client = rig.client
    ns = await client.get_namespace_index(JOBCONTROL_URI)
    structure = client.get_node(ua.NodeId(ua.ObjectIds.Structure))
    subtypes = await structure.get_children(refs=ua.ObjectIds.HasSubtype)
    served = [n for n in subtypes if n.nodeid.NamespaceIndex == ns]
    assert {in_file_numbering(n.nodeid, ns) for n in served} == set(official), "the official data types, all"

    for node in served:
        key = in_file_numbering(node.nodeid, ns)
        want = official[key]
        assert (await node.read_browse_name()) == ua.QualifiedName(want.name, ns), key
        assert (await node.read_attribute(ua.AttributeIds.IsAbstract)).Value.Value is False, key
        parent = await node.get_parent()
        assert parent is not None, key
        assert in_file_numbering(parent.nodeid, ns) == want.supertype, key
        encodings = await node.get_referenced_nodes(refs=ua.ObjectIds.HasEncoding)
        got = {(await e.read_browse_name()).Name: in_file_numbering(e.nodeid, ns) for e in encodings}
        assert got == want.encodings, f"{want.name} encodings"
        definition = await node.read_data_type_definition()
        assert definition.StructureType.name == want.structure_type, want.name
        assert in_file_numbering(definition.DefaultEncodingId, ns) == want.encodings["Default Binary"]
        assert in_file_numbering(definition.BaseDataType, ns) == want.supertype
        fields = [
            (f.Name, in_file_numbering(f.DataType, ns), f.ValueRank, list(f.ArrayDimensions or []),
             f.IsOptional)
            for f in definition.Fields
        ]
        assert fields == want.fields, f"{want.name} fields"


FRESH_CLIENT = """
import asyncio, json, sys
from asyncua import Client, ua

async def main(url, nodeid):
    async with Client(url, timeout=10) as client:
        classes = await client.load_data_type_definitions()
        job_order = classes["ISA95JobOrderDataType"](
            JobOrderID="J-1", Priority=2,
            JobOrderParameters=[classes["ISA95ParameterDataType"](
                ID="capacity_btu", Value=ua.Variant(12000, ua.VariantType.Int32))],
        )
        node = client.get_node(nodeid)
        await node.write_value(ua.DataValue(ua.Variant(job_order, ua.VariantType.ExtensionObject)))
        back = await node.read_value()
        (parameter,) = back.JobOrderParameters
        print(json.dumps({"id": back.JobOrderID, "priority": back.Priority, "work_master": back.WorkMasterID,
                          "parameter": [parameter.ID, parameter.Value.Value], "type": type(back).__name__}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def job_order_probe(rig) -> str:
    """A writable variable of the official job order type, for a client to fill and read back."""
    ns = await rig.client.get_namespace_index(JOBCONTROL_URI)
    holder = await rig.face.server.nodes.objects.add_variable(
        ua.NodeId("isa95-test-job-order", ns), "JobOrderProbe", None, datatype=ua.NodeId(3008, ns)
    )
    await holder.set_writable()
    return holder.nodeid.to_string()


async def run_client(*args: str) -> dict:
    """A client in a process of its own: its JSON summary line (node-opcua logs lines of its own)."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads([line for line in out.decode().splitlines() if line.startswith("{")][-1])


async def test_a_client_decodes_a_job_order_from_the_server_alone(rig) -> None:
    """asyncua in a process of its own, knowing nothing of the types but what it reads from the
    server, encodes a job order into a variable of the official type and decodes it back."""
    back = await run_client(sys.executable, "-c", FRESH_CLIENT, rig.url, await job_order_probe(rig))
    assert back == {
        "id": "J-1", "priority": 2, "work_master": None, "parameter": ["capacity_btu", 12000],
        "type": "ISA95JobOrderDataType",
    }  # fmt: skip


@pytest.mark.interop
async def test_node_opcua_decodes_a_job_order_from_the_server_alone(rig, node_client) -> None:
    """The same with node-opcua, an independent stack (tests/node/isa95.mjs)."""
    node = node_client[0]
    back = await run_client(node, str(NODE_DIR / "isa95.mjs"), rig.url, await job_order_probe(rig))
    assert back == {
        "write": "Good", "type": "ISA95JobOrderDataType", "id": "J-node", "priority": 4,
        "parameter": ["capacity_btu", 12000],
    }  # fmt: skip


async def test_the_nodeset_export_holds_the_job_control_types(ac_mapping, tmp_path: Path) -> None:
    path = tmp_path / "model.xml"
    await export_nodeset(ac_mapping, path)
    root = ET.parse(path).getroot()
    assert JOBCONTROL_URI in [uri.text for uri in root.find("u:NamespaceUris", UA)]
    exported = {n.get("BrowseName").split(":", 1)[1] for n in root.findall("u:UADataType", UA)}
    assert {s.name for s in STRUCTURES} <= exported
    object_types = {n.get("BrowseName").split(":", 1)[1] for n in root.findall("u:UAObjectType", UA)}
    assert {"ISA95JobOrderReceiverObjectType", "ISA95JobResponseProviderObjectType"} <= object_types


# the receivers (plain and with sub-states), the sub-state machines, response provider, status event
TYPES_COMPARED = tuple(f"ns=1;i={i}" for i in (1002, 1008, 1001, 1005, 1007, 1003, 1006))
FOLLOWED = ("HasComponent", "HasProperty")  # a type's children
NAMED_REFERENCES = ("FromState", "ToState", "HasCause", "HasEffect", "GeneratesEvent", "HasSubStateMachine")


def official_object_types() -> dict[str, dict]:
    """Each node of the compared object types in the official file, by node id: what a client
    browsing the type sees (class, browse name, type definition, modelling rule, data type, value
    rank, array dimensions, arguments, state and transition numbers, references between them)."""
    official_data_types()  # fails or skips if the file is missing, as above
    root = ET.parse(OFFICIAL).getroot()
    aliases = {a.get("Alias"): a.text for a in root.find("u:Aliases", UA)}
    nodes = {n.get("NodeId"): n for n in root if n.get("NodeId")}
    types_ns = "{http://opcfoundation.org/UA/2008/02/Types.xsd}"
    found: dict[str, dict] = {}

    def refs(node: ET.Element) -> list[tuple[str, bool, str]]:
        return [
            (r.get("ReferenceType"), r.get("IsForward", "true") == "true", aliases.get(r.text, r.text))
            for r in node.find("u:References", UA)
        ]  # fmt: skip

    def arguments(node: ET.Element) -> list[tuple]:
        out = []
        for arg in node.iter(f"{types_ns}Argument"):
            dims = arg.find(f"{types_ns}ArrayDimensions")
            out.append((
                arg.find(f"{types_ns}Name").text,
                arg.find(f"{types_ns}DataType").find(f"{types_ns}Identifier").text,
                int(arg.find(f"{types_ns}ValueRank").text),
                [int(d.text) for d in dims] if dims is not None else [],
            ))  # fmt: skip
        return out

    def visit(nid: str) -> None:
        node = nodes[nid]
        by_kind = refs(node)
        value = node.find("u:Value", UA)
        entry = {
            "class": node.tag.split("}")[1].removeprefix("UA"),
            "name": node.get("BrowseName"),
            "type": [t for k, f, t in by_kind if k == "HasTypeDefinition"],
            "rule": [t for k, f, t in by_kind if k == "HasModellingRule"],
            "refs": sorted((k, t) for k, f, t in by_kind if f and k in NAMED_REFERENCES),
        }
        if entry["class"] == "Variable":
            entry["data_type"] = aliases.get(node.get("DataType"), node.get("DataType"))
            entry["value_rank"] = int(node.get("ValueRank", "-1"))
            entry["dims"] = [int(d) for d in node.get("ArrayDimensions", "").split(",") if d]
            if entry["name"] in ("InputArguments", "OutputArguments"):
                entry["arguments"] = arguments(node)
            if entry["name"] in ("StateNumber", "TransitionNumber"):
                entry["value"] = int("".join(value.itertext()).strip())
        if entry["class"] == "ObjectType":
            entry["supertype"] = next(t for k, f, t in by_kind if k == "HasSubtype" and not f)
            entry["abstract"] = node.get("IsAbstract") == "true"
        found[nid] = entry
        for kind, forward, target in by_kind:
            if forward and kind in FOLLOWED:
                visit(target)

    for nid in TYPES_COMPARED:
        visit(nid)
    return found


async def served_object_types(client, ns: int) -> dict[str, dict]:
    """The same description, read from the server by browsing."""
    found: dict[str, dict] = {}

    def numbered(nodeid: ua.NodeId) -> str:
        return in_file_numbering(nodeid, ns)

    def name(qname: ua.QualifiedName) -> str:
        return f"1:{qname.Name}" if qname.NamespaceIndex == ns else qname.Name

    async def visit(node) -> None:
        nodeclass = await node.read_node_class()
        references = await node.get_references()
        ref_names = {}
        for ref in references:
            kind = ref.ReferenceTypeId
            if kind not in ref_names:
                ref_names[kind] = (await client.get_node(kind).read_browse_name()).Name
        forward = [(ref_names[r.ReferenceTypeId], r) for r in references if r.IsForward]
        entry = {
            "class": nodeclass.name,
            "name": name(await node.read_browse_name()),
            "type": [numbered(r.NodeId) for k, r in forward if k == "HasTypeDefinition"],
            "rule": [numbered(r.NodeId) for k, r in forward if k == "HasModellingRule"],
            "refs": sorted((k, numbered(r.NodeId)) for k, r in forward if k in NAMED_REFERENCES),
        }
        if nodeclass == ua.NodeClass.Variable:
            entry["data_type"] = numbered(await node.read_data_type())
            entry["value_rank"] = await node.read_value_rank()
            entry["dims"] = list(await node.read_array_dimensions() or [])
            if entry["name"] in ("InputArguments", "OutputArguments"):
                entry["arguments"] = [
                    (a.Name, numbered(a.DataType), a.ValueRank, list(a.ArrayDimensions or []))
                    for a in await node.read_value()
                ]
            if entry["name"] in ("StateNumber", "TransitionNumber"):
                entry["value"] = await node.read_value()
        if nodeclass == ua.NodeClass.ObjectType:
            entry["supertype"] = numbered((await node.get_parent()).nodeid)
            entry["abstract"] = (await node.read_attribute(ua.AttributeIds.IsAbstract)).Value.Value
        found[numbered(node.nodeid)] = entry
        for kind, ref in forward:
            if kind in FOLLOWED:
                await visit(client.get_node(ref.NodeId))

    for nid in TYPES_COMPARED:
        await visit(client.get_node(ua.NodeId(int(nid.rsplit("=", 1)[1]), ns)))
    return found


async def test_the_job_control_object_types_match_the_official_nodeset(rig) -> None:
    """Every node of the receiver types, the sub-state machines, the response provider and the
    status event type, as served, equals the official file's: ids, names, modelling rules, method
    arguments, states, transitions, sub-state machines."""
    official = official_object_types()
    served = await served_object_types(rig.client, await rig.client.get_namespace_index(JOBCONTROL_URI))
    assert sorted(served) == sorted(official), "the same nodes"
    for nid, want in official.items():
        assert served[nid] == want, nid
