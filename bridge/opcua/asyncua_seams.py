"""Every asyncua name the bridge relies on beyond its documented API, in one table, checked at
start-up; and the only code that spells a private asyncua name.

asyncua has no hooks for what the bridge needs (a guard on every secure channel, per-client
caps, a notification path fast enough for plant telemetry, paged history), so we wrap instance
methods and read internals of the exact version pinned in pyproject.toml. A rename in a new
asyncua must stop the bridge with the name, never leave a guard silently unattached:
`check()` runs before anything is hooked and refuses to start (ConfigurationError) if any seam
the configuration needs is gone; the channel guard's seams are needed only with --security.
docs/upgrading.md says how to move to a new version; tests/unit/test_seams.py holds the rule
that no other module reads a private asyncua name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from asyncua import Server
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues
from asyncua.server.subscription_service import SubscriptionService
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua import ua_binary

from bridge.errors import ConfigurationError


def _callable(owner: type | object, name: str) -> Callable[[Server], bool]:
    return lambda server: callable(getattr(owner, name, None))


def _set_in_init(owner: type, name: str) -> Callable[[Server], bool]:
    """An attribute each instance gets in __init__ (not on the class, so read from its code)."""
    return lambda server: name in owner.__init__.__code__.co_names


def _on_live(path: str) -> Callable[[Server], bool]:
    """An attribute of this server's live objects, e.g. "iserver.history_manager"."""

    def present(server: Server) -> bool:
        obj: Any = server
        for part in path.split("."):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    return present


@dataclass(frozen=True)
class Seam:
    name: str  # as asyncua spells it
    present: Callable[[Server], bool]
    used_by: str  # the module of ours that needs it
    security: bool = False  # a --security guarantee rests on it


def _seam(owner: Any, attr: str, used_by: str, *, how: str = "method", security: bool = False) -> Seam:
    """`how`: method (callable on the class or module), init (set on each instance in __init__),
    or live (`owner` is a path from the Server to the object that has it)."""
    if how == "live":
        return Seam(f"{owner.rsplit('.', 1)[-1]}.{attr}", _on_live(f"{owner}.{attr}"), used_by, security)
    present = _set_in_init(owner, attr) if how == "init" else _callable(owner, attr)
    return Seam(f"{owner.__name__.rsplit('.', 1)[-1]}.{attr}", present, used_by, security)


_GUARD, _SESSIONS, _NOTIFY = "channel_guard.py", "session_limits.py, endpoint_security.py", "notify.py"
_ITEMS, _SUBS = MonitoredItemService, SubscriptionService
_ITEM_SRV = "plant.py, job_control.py, notify.py, session_limits.py"
SEAMS: tuple[Seam, ...] = (
    # the secure channel guard: without it --security would serve the None channel
    _seam(UaProcessor, "_process_message", _GUARD, security=True),
    _seam(UaProcessor, "open_secure_channel", _GUARD, security=True),
    _seam(UaProcessor, "_connection", _GUARD, how="init", security=True),
    _seam("iserver", "asyncio_transports", _GUARD, how="live", security=True),
    _seam(InternalServer, "decrypt_user_token", _GUARD, security=True),
    # sessions audited and capped per client
    _seam(InternalServer, "create_session", _SESSIONS),
    _seam(InternalServer, "register_external_session", _SESSIONS),
    _seam(InternalServer, "unregister_external_session", _SESSIONS),
    _seam(InternalSession, "create_session", _SESSIONS),
    _seam(InternalSession, "activate_session", _SESSIONS),
    _seam("iserver", "max_session_timeout_ms", _SESSIONS, how="live"),
    _seam("iserver", "min_session_timeout_ms", _SESSIONS, how="live"),
    _seam(_SUBS, "create_subscription", _SESSIONS),
    _seam(_SUBS, "create_monitored_items", _SESSIONS),
    _seam(_SUBS, "delete_monitored_items", _SESSIONS),
    _seam(_SUBS, "modify_monitored_items", _SESSIONS),
    _seam("iserver.subscription_service", "subscriptions", _SESSIONS, how="live"),
    # the telemetry fast path: equal to asyncua's own, byte for byte (tests/unit/test_notify.py)
    _seam(_ITEMS, "_monitored_items", _NOTIFY, how="init"),
    _seam(_ITEMS, "_monitored_datachange", _NOTIFY, how="init"),
    _seam(_ITEMS, "_is_data_changed", _NOTIFY),
    _seam(_ITEMS, "_is_deadband_exceeded", _NOTIFY),
    _seam(_ITEMS, "datachange_callback", _NOTIFY),
    _seam(MonitoredItemValues, "set_current_datavalue", _NOTIFY),
    _seam(InternalSubscription, "_triggered_datachanges", _NOTIFY, how="init"),
    _seam(InternalSubscription, "_trigger_publish", _NOTIFY),
    _seam(AddressSpace, "_nodes", "notify.py, on_demand.py", how="init"),
    _seam(AttributeValue, "datachange_callbacks", _NOTIFY, how="init"),
    _seam(ua_binary, "create_dataclass_serializer", "wire.py"),
    # events built only while some monitored item watches events
    _seam(InternalSubscription, "monitored_item_srv", _ITEM_SRV, how="init"),
    _seam(_ITEMS, "_monitored_events", "plant.py, job_control.py", how="init"),
    # the rest of the server's life
    _seam("iserver", "bind_condition_methods", "server_setup.py", how="live"),
    _seam(_SUBS, "condition_refresh", "alarm_conditions.py"),
    _seam("iserver", "history_manager", "history_read.py", how="live"),
    _seam("iserver", "attribute_service", "setpoints.py", how="live"),
    _seam(InternalServer, "time_task", "server_setup.py", how="init"),
    # the standard address space copied, not filled again (gone: asyncua fills it, slower, nothing else)
    _seam(InternalServer, "load_standard_address_space", "server_setup.py"),
    _seam(NodeData, "attributes", "server_setup.py", how="init"),
    _seam(NodeData, "references", "server_setup.py", how="init"),
)


CHANNEL_SEAMS = ("UaProcessor._process_message", "iserver.asyncio_transports")  # a request's client


def missing_of(server: Server, names: tuple[str, ...]) -> list[str]:
    """Which of the seams named (as SEAMS names them) this asyncua lacks."""
    return [seam.name for seam in SEAMS if seam.name in names and not seam.present(server)]


def asyncua_version() -> str:
    return version("asyncua")


def missing(server: Server, *, secured: bool) -> list[Seam]:
    """The seams this configuration needs that this asyncua does not have."""
    return [seam for seam in SEAMS if (secured or not seam.security) and not seam.present(server)]


def check(server: Server, *, secured: bool) -> None:
    """Refuse to start on an asyncua that lacks a seam we hook (fail closed, with the names)."""
    gone = missing(server, secured=secured)
    if not gone:
        return
    names = ", ".join(f"{seam.name} ({seam.used_by})" for seam in gone)
    guard = " the channel guard could not attach;" if any(seam.security for seam in gone) else ""
    flag = "--security: " if secured else ""
    raise ConfigurationError(
        f"{flag}asyncua {asyncua_version()} lacks what linebridge hooks: {names};{guard}"
        " refusing to start (docs/upgrading.md)"
    )


# -- the accessors: every private asyncua name the other modules need, spelled here only -----


def processor_connection(processor: UaProcessor) -> Any:
    """The secure channel a UA processor serves (its policy, and whether it is open)."""
    return processor._connection


def hook_process_message(
    processor: UaProcessor, wrap: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]
) -> None:
    """Route every message the processor handles through `wrap(original)`."""
    processor._process_message = wrap(processor._process_message)


def item_tables(items: MonitoredItemService) -> tuple[dict[int, int], dict[int, Any]]:
    """(client handle → monitored item id, id → its data): both made once per service."""
    return items._monitored_datachange, items._monitored_items


def item_filters(items: MonitoredItemService) -> tuple[Callable[..., bool], Callable[..., bool]]:
    """asyncua's own data-change and deadband tests, as its callback applies them."""
    return items._is_data_changed, items._is_deadband_exceeded


def triggered_datachanges(isub: InternalSubscription) -> dict[int, list[Any]]:
    """The notifications waiting for the next publish (a new dict after each publish)."""
    return isub._triggered_datachanges


async def trigger_publish(isub: InternalSubscription) -> None:
    await isub._trigger_publish()


def events_watched(iserver: InternalServer) -> bool:
    """Whether a monitored item of any subscription watches events (of any notifier): asyncua
    builds and filters an event for every subscription, data-only ones too, and drops it there."""
    subscriptions = iserver.subscription_service.subscriptions.values()
    return any(sub.monitored_item_srv._monitored_events for sub in subscriptions)


def aspace_nodes(aspace: AddressSpace) -> dict[Any, Any]:
    return aspace._nodes


def replace_node_table(aspace: AddressSpace, table: Callable[[dict[Any, Any]], dict[Any, Any]]) -> None:
    """Give the address space `table(its nodes)` as its node table (asyncua's own shelf loading
    swaps this table the same way): a dict subclass that may build a node when it is asked for."""
    aspace._nodes = table(aspace._nodes)


# -- the standard address space, filled once a process ----------------------------------------

_standard: dict[Any, NodeData] | None = None  # as asyncua filled it, kept from a process's second server
_filled = 0  # standard address spaces asyncua filled in this process


def share_standard_address_space(server: Server) -> None:
    """asyncua fills the standard address space (6,000 nodes) node by node, 1.5 s a server; a
    process that makes several (the test suite makes ~150) copies one instead, in a tenth of that.
    The copy is kept from the second server on: `linebridge run` makes one and pays nothing for it.
    A copy is the server's own: nodes, attribute and reference tables new, values (replaced on a
    write, never changed in place) shared."""
    iserver = server.iserver
    fill = iserver.load_standard_address_space

    async def load(shelf_file: Path | None = None) -> None:
        global _standard, _filled
        if shelf_file is not None:  # asyncua's own cache on disk: its way, not ours
            await fill(shelf_file)
        elif _standard is None:
            await fill()
            _filled += 1
            if _filled > 1:
                _standard = await asyncio.to_thread(_copy_nodes, iserver.aspace._nodes)
        else:
            iserver.aspace._nodes.update(await asyncio.to_thread(_copy_nodes, _standard))

    iserver.load_standard_address_space = load  # this server's only: asyncua's init() calls it


def _copy_nodes(nodes: dict[Any, NodeData]) -> dict[Any, NodeData]:
    copied = {}
    for nodeid, node in nodes.items():
        copy = object.__new__(NodeData)
        copy.__dict__.update(node.__dict__)
        copy.attributes = {attr: _copy_value(value) for attr, value in node.attributes.items()}
        copy.references = list(node.references)
        copied[nodeid] = copy
    return copied


def _copy_value(value: AttributeValue) -> AttributeValue:
    copy = object.__new__(AttributeValue)
    copy.__dict__.update(value.__dict__)
    copy.datachange_callbacks = dict(value.datachange_callbacks)
    return copy
