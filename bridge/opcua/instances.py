"""Order and step objects made by copying the first one asyncua instantiated of their type.

asyncua's instantiate browses the type definition anew for every object (each child's references,
reference-type subtypes, modelling rules) and adds the children one request at a time: at a
hundred steps a second that was most of the event loop, and what held the order path's step
overhead at tens of milliseconds (docs/telemetry.md). The result for one type is always the same
shape, so the first instance of each type is made by asyncua and kept as a template; the next
ones are copies of its nodes in the address space under new node ids (the template's ids with
the new root's id in front, as asyncua names children of a string id), their references mapped
to the copies, and the parent given its reference to the new object.

This reads asyncua 2.1's address-space internals (NodeData, AttributeValue; pinned <2.2);
tests/integration/test_opcua.py holds a copy equal to an instantiated object, browse for browse.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from asyncua import Node, Server, ua
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData

_HIERARCHICAL = frozenset(
    ua.NodeId(i)
    for i in (
        ua.ObjectIds.HasComponent,
        ua.ObjectIds.HasProperty,
        ua.ObjectIds.Organizes,
        ua.ObjectIds.HasOrderedComponent,
    )
)
_NAMES = (ua.AttributeIds.BrowseName, ua.AttributeIds.DisplayName)


@dataclass(frozen=True)
class _Node:
    """One node of a template as it was when made (the original lives on and changes)."""

    nodeid: ua.NodeId
    attributes: dict[ua.AttributeIds, ua.DataValue]
    references: list[ua.ReferenceDescription]
    call: object


@dataclass
class _Template:
    root: ua.NodeId
    parent: ua.NodeId
    nodes: list[_Node]  # the root first
    parent_ref: ua.ReferenceDescription  # the parent's reference to the root

    def new_id(self, old: ua.NodeId, root: ua.NodeId) -> ua.NodeId:
        return ua.NodeId(root.Identifier + old.Identifier[len(self.root.Identifier) :], root.NamespaceIndex)


class InstanceFactory:
    def __init__(self, server: Server) -> None:
        self._aspace: AddressSpace = server.iserver.aspace
        self._templates: dict[ua.NodeId, _Template | None] = {}  # None: this type is never copied

    async def add_object(
        self, parent: Node, nodeid: ua.NodeId, name: ua.QualifiedName, type_id: ua.NodeId
    ) -> ua.NodeId:
        """`parent.add_object(nodeid, name, type_id)`, the same object, made faster from the second on."""
        template = self._templates.get(type_id)
        if template is None:
            node = await parent.add_object(nodeid, name, type_id)
            if type_id not in self._templates:
                self._templates[type_id] = self._capture(node.nodeid, parent.nodeid)
            return node.nodeid
        self._copy(template, parent.nodeid, nodeid, name)
        return nodeid

    def _capture(self, root: ua.NodeId, parent: ua.NodeId) -> _Template | None:
        if root.NodeIdType != ua.NodeIdType.String:
            return None
        nodes, queue = [], [root]
        while queue:
            data = self._aspace[queue.pop()]
            attributes = {attr: value.value for attr, value in data.attributes.items()}
            if any(v.value_callback or v.value_setter for v in data.attributes.values()):
                return None  # values computed on read: not ours to copy
            nodes.append(_Node(data.nodeid, attributes, list(data.references), data.call))
            for ref in data.references:
                if ref.IsForward and ref.ReferenceTypeId in _HIERARCHICAL:
                    if not (
                        ref.NodeId.NodeIdType == ua.NodeIdType.String
                        and ref.NodeId.Identifier.startswith(f"{root.Identifier}.")
                    ):
                        return None  # a child not named after its parent: leave this type to asyncua
                    queue.append(ref.NodeId)
        parent_ref = next(
            (r for r in self._aspace[parent].references if r.IsForward and r.NodeId == root), None
        )
        if parent_ref is None:
            return None
        return _Template(root, parent, nodes, parent_ref)

    def _copy(self, template: _Template, parent: ua.NodeId, root: ua.NodeId, name: ua.QualifiedName) -> None:
        inside = {data.nodeid for data in template.nodes}
        display = ua.LocalizedText(name.Name)
        if root in self._aspace:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadNodeIdExists)
        for data in template.nodes:
            copy = NodeData(template.new_id(data.nodeid, root))
            is_root = data.nodeid == template.root
            for attr, value in data.attributes.items():
                if attr == ua.AttributeIds.NodeId:
                    value = dataclasses.replace(value, Value=ua.Variant(copy.nodeid, ua.VariantType.NodeId))
                elif is_root and attr in _NAMES:
                    new = name if attr == ua.AttributeIds.BrowseName else display
                    value = dataclasses.replace(value, Value=ua.Variant(new))
                copy.attributes[attr] = AttributeValue(value)
            for ref in data.references:
                if ref.NodeId in inside:
                    mapped = template.new_id(ref.NodeId, root)
                    if ref.NodeId == template.root:
                        ref = dataclasses.replace(ref, NodeId=mapped, BrowseName=name, DisplayName=display)
                    else:
                        ref = dataclasses.replace(ref, NodeId=mapped)
                elif is_root and ref.NodeId == template.parent and not ref.IsForward:
                    ref = dataclasses.replace(ref, NodeId=parent)
                copy.references.append(ref)
            copy.call = data.call
            self._aspace[copy.nodeid] = copy
        self._aspace[parent].references.append(
            dataclasses.replace(template.parent_ref, NodeId=root, BrowseName=name, DisplayName=display)
        )
