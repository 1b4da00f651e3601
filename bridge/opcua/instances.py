"""Order and step objects made by copying the first one asyncua instantiated of their type.

asyncua's instantiate browses the type definition anew for every object (each child's references,
reference-type subtypes, modelling rules) and adds the children one request at a time: at a
hundred steps a second that was most of the event loop, and what held the order path's step
overhead at tens of milliseconds (docs/telemetry.md). The result for one type is always the same
shape, so the first instance of each type is made by asyncua and kept as a template; the next
ones are copies of its nodes in the address space under new node ids (the template's ids with
the new root's id in front, as asyncua names children of a string id), their references mapped
to the copies, and the parent given its reference to the new object.

This builds asyncua's address-space records (NodeData, AttributeValue; the version is pinned);
tests/integration/test_opcua.py holds a copy equal to an instantiated object, browse for browse.
"""

from __future__ import annotations

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


# How a copy's reference differs from the template's
_SAME, _INSIDE, _TO_ROOT, _TO_PARENT = range(4)


@dataclass(frozen=True)
class _Node:
    """One node of a template as it was when made (the original lives on and changes), laid out
    for copying: what every copy shares with it, and what each gets anew."""

    suffix: str  # its id after the root's id
    # What every copy shares: one AttributeValue for all of them (their attributes other than the
    # Value are never written: WriteMask 0 for clients, and we write only values), so a copy costs
    # its own Value, NodeId and names, not fifteen attribute objects (docs/opcua-model.md).
    shared: tuple[tuple[ua.AttributeIds, AttributeValue], ...]
    value: ua.DataValue | None  # the Value attribute's initial DataValue (each copy gets its own holder)
    node_id: ua.DataValue | None  # its NodeId attribute, to hold the copy's id
    names: bool  # the root: BrowseName and DisplayName are the copy's
    references: tuple[tuple[int, ua.ReferenceDescription, str], ...]  # how, the reference, target suffix
    call: object


@dataclass
class _Template:
    nodes: list[_Node]  # the root first
    parent_ref: ua.ReferenceDescription  # the parent's reference to the root
    names: dict[ua.AttributeIds, ua.DataValue]  # the root's BrowseName and DisplayName attributes


class InstanceFactory:
    def __init__(self, server: Server) -> None:
        self._aspace: AddressSpace = server.iserver.aspace
        self._templates: dict[ua.NodeId, _Template | None] = {}  # None: this type is never copied

    def has_template(self, type_id: ua.NodeId) -> bool:
        return self._templates.get(type_id) is not None

    async def prepare(self, parent: Node, scratch: ua.NodeId, type_id: ua.NodeId) -> Node | None:
        """Make the template of `type_id` now, from an object at `scratch` under `parent` that the
        caller deletes (so that copies can be made synchronously later); the object, or None when
        there was a template already."""
        if type_id in self._templates:
            return None
        node = await parent.add_object(scratch, ua.QualifiedName("scratch", scratch.NamespaceIndex), type_id)
        self._templates[type_id] = self._capture(node.nodeid, parent.nodeid)
        return node

    def copy(
        self, parent: ua.NodeId, nodeid: ua.NodeId, name: ua.QualifiedName, type_id: ua.NodeId, *, link: bool
    ) -> None:
        """A copy of the type's template, at once (the template must exist: `prepare`); `link`:
        give the parent its reference to it (False when the parent has it already)."""
        template = self._templates.get(type_id)
        if template is None:
            raise LookupError(f"no template of {type_id}")
        self._copy(template, parent, nodeid, name, link=link)

    def link(self, parent: ua.NodeId, nodeid: ua.NodeId, name: ua.QualifiedName, type_id: ua.NodeId) -> None:
        """Only the parent's reference to a copy, as `copy(link=True)` would add it: the copy's
        nodes may come later (on_demand.py)."""
        template = self._templates.get(type_id)
        if template is None:
            raise LookupError(f"no template of {type_id}")
        display = ua.LocalizedText(name.Name)
        self._aspace[parent].references.append(_retarget(template.parent_ref, nodeid, name, display))

    def unlink(self, parent: ua.NodeId, nodeid: ua.NodeId) -> None:
        """Drop the parent's forward references to `nodeid` (whose nodes are gone already)."""
        data = self._aspace[parent]
        data.references = [r for r in data.references if not (r.IsForward and r.NodeId == nodeid)]

    def subtree(self, root: ua.NodeId) -> list[ua.NodeId]:
        """The ids of `root` and everything hierarchically under it that is named after it."""
        found, queue = [], [root]
        prefix = f"{root.Identifier}."
        while queue:
            nodeid = queue.pop()
            data = self._aspace.get(nodeid)
            if data is None:
                continue
            found.append(nodeid)
            queue += [
                ref.NodeId for ref in data.references
                if ref.IsForward and ref.ReferenceTypeId in _HIERARCHICAL
                and ref.NodeId.NodeIdType == ua.NodeIdType.String and ref.NodeId.Identifier.startswith(prefix)
            ]  # fmt: skip
        return found

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
        self._copy(template, parent.nodeid, nodeid, name, link=True)
        return nodeid

    def _capture(self, root: ua.NodeId, parent: ua.NodeId) -> _Template | None:
        if root.NodeIdType != ua.NodeIdType.String:
            return None
        found, queue = [], [root]
        while queue:
            data = self._aspace[queue.pop()]
            if any(v.value_callback or v.value_setter for v in data.attributes.values()):
                return None  # values computed on read: not ours to copy
            found.append(data)
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
        inside = {data.nodeid for data in found}
        prefix = len(root.Identifier)
        nodes, names = [], {}
        for data in found:
            is_root = data.nodeid == root
            values = {attr: value.value for attr, value in data.attributes.items()}
            node_id = values.pop(ua.AttributeIds.NodeId, None)
            value = values.pop(ua.AttributeIds.Value, None)
            if is_root:
                names = {attr: values.pop(attr) for attr in _NAMES if attr in values}
            references = []
            for ref in data.references:
                how = _SAME
                if ref.NodeId in inside:
                    how = _TO_ROOT if ref.NodeId == root else _INSIDE
                elif is_root and ref.NodeId == parent and not ref.IsForward:
                    how = _TO_PARENT
                suffix = ref.NodeId.Identifier[prefix:] if how in (_INSIDE, _TO_ROOT) else ""
                references.append((how, ref, suffix))
            nodes.append(
                _Node(
                    data.nodeid.Identifier[prefix:],
                    tuple((attr, AttributeValue(v)) for attr, v in values.items()),
                    value,
                    node_id,
                    is_root,
                    tuple(references),
                    data.call,
                )
            )
        return _Template(nodes, parent_ref, names)

    def _copy(
        self, template: _Template, parent: ua.NodeId, root: ua.NodeId, name: ua.QualifiedName, *, link: bool
    ) -> None:
        display = ua.LocalizedText(name.Name)
        if root in self._aspace:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadNodeIdExists)
        base, ns = root.Identifier, root.NamespaceIndex
        renamed = {
            attr: _with_value(value, ua.Variant(name if attr == ua.AttributeIds.BrowseName else display))
            for attr, value in template.names.items()
        }
        ids = {n.suffix: root if n.names else ua.NodeId(base + n.suffix, ns) for n in template.nodes}
        for node in template.nodes:
            nodeid = ids[node.suffix]
            copy = NodeData(nodeid)
            attributes = copy.attributes
            attributes.update(node.shared)
            if node.value is not None:
                attributes[ua.AttributeIds.Value] = AttributeValue(node.value)
            if node.node_id is not None:
                value = _with_value(node.node_id, ua.Variant(nodeid, ua.VariantType.NodeId))
                attributes[ua.AttributeIds.NodeId] = AttributeValue(value)
            if node.names:
                for attr, value in renamed.items():
                    attributes[attr] = AttributeValue(value)
            references = copy.references
            for how, ref, suffix in node.references:
                if how == _INSIDE:
                    ref = _retarget(ref, ids[suffix])
                elif how == _TO_ROOT:
                    ref = _retarget(ref, root, name, display)
                elif how == _TO_PARENT:
                    ref = _retarget(ref, parent)
                references.append(ref)
            copy.call = node.call
            self._aspace[nodeid] = copy
        if link:
            self._aspace[parent].references.append(_retarget(template.parent_ref, root, name, display))


def _retarget(
    ref: ua.ReferenceDescription,
    target: ua.NodeId,
    name: ua.QualifiedName | None = None,
    display: ua.LocalizedText | None = None,
) -> ua.ReferenceDescription:
    """`ref` to another node (dataclasses.replace, without its per-call look at the fields)."""
    return ua.ReferenceDescription(
        ref.ReferenceTypeId, ref.IsForward, target, name or ref.BrowseName, display or ref.DisplayName,
        ref.NodeClass, ref.TypeDefinition,
    )  # fmt: skip


def _with_value(value: ua.DataValue, variant: ua.Variant) -> ua.DataValue:
    return ua.DataValue(
        variant, value.StatusCode, value.SourceTimestamp, value.ServerTimestamp, value.SourcePicoseconds,
        value.ServerPicoseconds,
    )  # fmt: skip
