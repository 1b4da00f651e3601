"""Export of the generated model as NodeSet2 XML, for other tools to import."""

from __future__ import annotations

from pathlib import Path

from asyncua import Server

from bridge.mapping.model import LineMapping
from bridge.opcua.isa95_model import build_job_control
from bridge.opcua.isa95_types import JOBCONTROL_URI
from bridge.opcua.type_tree import build_types
from bridge.opcua.uatypes import TYPES_URI


async def export_nodeset(mapping: LineMapping, path: Path) -> None:
    """Write the types of `mapping` (namespace urn:linebridge:types) and the ISA-95 Job Control
    data and object types this server serves as a NodeSet2 file."""
    server = Server()
    await server.init()
    types = await build_types(server, mapping)
    await build_job_control(server, types.ns)
    await server.export_xml_by_ns(str(path), [TYPES_URI, JOBCONTROL_URI])
