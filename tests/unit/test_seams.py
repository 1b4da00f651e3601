"""The library seams: each hooked name present in the pinned versions, a start that stops with the
name when one is gone, and no module but the seam modules reading a private library name."""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from asyncua import Server
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.uaprocessor import UaProcessor
from pymodbus.framer.base import FramerBase
from structlog.testing import capture_logs

from bridge.errors import ConfigurationError
from bridge.modbus import pymodbus_seams
from bridge.opcua import asyncua_seams
from bridge.opcua.connections import ClientConnections

ROOT = Path(__file__).resolve().parents[2]
SEAM_MODULES = {"bridge/opcua/asyncua_seams.py", "bridge/modbus/pymodbus_seams.py"}
# the standard library's, with Python itself pinned to 3.11: whether acquire() takes a lock at once
STDLIB = {"bridge/modbus/connection.py": {"_waiters"}}


@pytest.mark.parametrize("seam", asyncua_seams.SEAMS, ids=lambda s: s.name)
def test_each_asyncua_seam_is_there(seam):
    assert seam.present(Server())


@pytest.mark.parametrize("seam", pymodbus_seams.SEAMS, ids=lambda s: s.name)
def test_each_pymodbus_seam_is_there(seam):
    assert seam.present()


def test_the_libraries_are_the_pinned_versions():
    """The seams were written against these exact versions; pip must not pick another."""
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in ("asyncua", "pymodbus"):
        (pin,) = [p for p in pins if p.startswith(f"{name}==")]
        assert version(name) == pin.split("==")[1]


def test_a_renamed_hook_stops_an_unsecured_start_too(monkeypatch):
    monkeypatch.delattr(InternalSubscription, "_trigger_publish")
    with pytest.raises(
        ConfigurationError, match=r"InternalSubscription\._trigger_publish \(notify\.py\).*refusing"
    ):
        asyncua_seams.check(Server(), secured=False)


def test_the_channel_guard_seams_matter_only_with_security(monkeypatch):
    monkeypatch.delattr(UaProcessor, "_process_message")
    asyncua_seams.check(Server(), secured=False)  # nothing hooks it without --security
    with pytest.raises(
        ConfigurationError, match=r"^--security: .*UaProcessor\._process_message.*channel guard"
    ):
        asyncua_seams.check(Server(), secured=True)


def test_without_security_a_missing_connection_seam_leaves_anonymous_callers_one_client(monkeypatch):
    """Without --security the connection seams only count connections and tag each request with
    its client's address; without them the server starts all the same (nothing is guarded there),
    and says what it lost."""
    assert ClientConnections(Server(), 16, lambda *_: None).install() is True
    monkeypatch.delattr(UaProcessor, "_process_message")
    server = Server()
    with capture_logs() as logs:
        assert ClientConnections(server, 16, lambda *_: None).install() is False
    assert [(e["event"], e["lacking"]) for e in logs] == [
        ("opcua_client_addresses_unknown", ["UaProcessor._process_message"])
    ]
    assert type(server.iserver.asyncio_transports) is list  # asyncua's own, untouched


def test_a_changed_pymodbus_framer_stops_the_bridge(monkeypatch):
    monkeypatch.setattr(FramerBase, "handleFrame", lambda self, data: (0, None))
    with pytest.raises(ConfigurationError, match=r"FramerBase\.handleFrame.*refusing to start"):
        pymodbus_seams.check()


def _names_an_attribute(node: ast.AST) -> bool:
    """getattr(x, "name"), setattr(...), hasattr(...) with the name spelled out."""
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "id", "") in ("getattr", "setattr", "hasattr")
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    )


def _private_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = None
        if isinstance(node, ast.Attribute) and not (
            isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        ):
            name = node.attr
        elif _names_an_attribute(node):
            name = node.args[1].value
        allowed = STDLIB.get(str(path.relative_to(ROOT)), set())
        if name and name.startswith("_") and not name.startswith("__") and name not in allowed:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_no_module_but_the_seams_reads_a_private_name_of_another_object():
    """Private names of a library (or of another of our objects) are read in the seam modules
    only, where start-up checks each one: anywhere else a rename would fail silently."""
    offenders = []
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        if str(path.relative_to(ROOT)) not in SEAM_MODULES:
            offenders += _private_reads(path)
    assert offenders == []


async def test_a_copied_standard_address_space_is_asyncuas_own_and_the_servers_alone():
    """From a process's second server on, the standard nodes are copied: the same nodes,
    attributes and references as asyncua fills them, in tables of each server's own, so a write
    to one server's standard node is not seen by another's."""
    from asyncua import ua

    servers = []
    for _ in range(3):
        server = Server()
        asyncua_seams.share_standard_address_space(server)
        await server.init()
        servers.append(server)
    filled = Server()
    await filled.init()  # asyncua's own fill
    _, second, third = (asyncua_seams.aspace_nodes(s.iserver.aspace) for s in servers)
    own = asyncua_seams.aspace_nodes(filled.iserver.aspace)
    assert second.keys() == third.keys() == own.keys()
    display = ua.AttributeIds.DisplayName
    for nodeid, node in own.items():
        copied = third[nodeid]
        assert copied is not second[nodeid]
        assert copied.attributes is not second[nodeid].attributes
        assert copied.references is not second[nodeid].references
        assert copied.attributes.keys() == node.attributes.keys(), nodeid
        assert [r.NodeId for r in copied.references] == [r.NodeId for r in node.references], nodeid
        # copied, not filled again: the values are the very ones the kept copy holds
        assert copied.attributes[display].value is second[nodeid].attributes[display].value, nodeid
    name = ua.NodeId(ua.ObjectIds.Server_ServerStatus_BuildInfo_ProductName)
    await servers[1].get_node(name).write_value("written on the second server")
    assert await servers[2].get_node(name).read_value() == await filled.get_node(name).read_value()
