"""Every pymodbus name and wording the bridge relies on beyond its documented API, in one table,
checked at start-up; and the only code that reaches into a pymodbus client's internals.

pymodbus skips a reply that answers another request with a log line and nothing a caller can
count; the link counts those per station (docs/handshake.md), which needs the client's framer
and the words of pymodbus's error. A new pymodbus without them must stop the bridge with the
name, not count zero forever (docs/upgrading.md).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pymodbus.client.base import ModbusBaseClient
from pymodbus.framer.base import FramerBase
from pymodbus.transaction import transaction

from bridge.errors import ConfigurationError

# pymodbus's words for a reply that answers another request than the one sent
STALE_REPLY = re.compile(r"request uses (transaction|device) id=\d+ but received")


@dataclass(frozen=True)
class Seam:
    name: str
    present: Callable[[], bool]
    used_by: str


def _set_in_init(owner: type, name: str) -> Callable[[], bool]:
    return lambda: name in owner.__init__.__code__.co_names


def _handle_frame_takes_what_we_pass() -> bool:
    wanted = ["self", "data", "exp_devid", "exp_tid"]
    return list(inspect.signature(FramerBase.handleFrame).parameters) == wanted


def _stale_wording_unchanged() -> bool:
    source = inspect.getsource(transaction)
    for placeholder in ("{request.dev_id}", "{request.transaction_id}"):
        source = source.replace(placeholder, "1")
    return STALE_REPLY.search(source) is not None


SEAMS: tuple[Seam, ...] = (
    Seam("ModbusBaseClient.ctx", _set_in_init(ModbusBaseClient, "ctx"), "link.py"),
    Seam("TransactionManager.framer", _set_in_init(transaction.TransactionManager, "framer"), "link.py"),
    Seam("FramerBase.handleFrame(data, exp_devid, exp_tid)", _handle_frame_takes_what_we_pass, "link.py"),
    Seam("TransactionManager's words 'request uses … but received'", _stale_wording_unchanged, "link.py"),
)


def check() -> None:
    """Refuse to start on a pymodbus that lacks a seam the link uses (with the names)."""
    gone = [seam for seam in SEAMS if not seam.present()]
    if gone:
        names = ", ".join(f"{seam.name} ({seam.used_by})" for seam in gone)
        raise ConfigurationError(
            f"pymodbus {version('pymodbus')} lacks what linebridge hooks: {names}; refusing to start"
            " (docs/upgrading.md)"
        )


def count_stale_replies(client: ModbusBaseClient, count: Callable[[], None]) -> None:
    """Call `count()` for every whole frame the client's framer consumes without a PDU: a reply
    to another request (late, or with a wrong transaction or device id), which pymodbus skips
    with only a log line. The framer is this client's own."""
    framer = client.ctx.framer
    handle = framer.handleFrame

    def counted(data: bytes, exp_devid: int, exp_tid: int) -> tuple[int, Any]:
        used, pdu = handle(data, exp_devid, exp_tid)
        if pdu is None and used:
            count()
        return used, pdu

    framer.handleFrame = counted
