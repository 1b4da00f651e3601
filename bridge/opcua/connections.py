"""Each OPC UA client connection as asyncua makes it: how many one client address may hold, and
who watches new ones (the channel guard with --security, the request tagger without).

asyncua has no hook for new connections and caps them only for the whole server (1,000, from
anyone): one host holding a thousand idle connections (asyncua closes each after 30 s without a
session, and the host opens it again at once) shut every other client out, the MES included. Its
protocol appends each transport to the internal server's `asyncio_transports` list once the
connection's processor exists, and removes it when the connection is lost; that list is replaced
(before the server starts) by one that counts per address, closes a connection past its client's
share at once, and hands every other one to the watchers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from asyncua import Server

from bridge.opcua import asyncua_seams

log = structlog.get_logger(__name__)

Watcher = Callable[[Any], None]  # told of each admitted transport


def peer_of(transport: Any) -> tuple[str, str]:
    """A client connection's address, and its address:port."""
    peer = transport.get_extra_info("peername")
    address = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
    return address, f"{address}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else address


class ClientConnections:
    def __init__(self, server: Server, per_client: int, refused: Callable[[str, int], None]) -> None:
        self._server = server
        self.per_client = per_client
        self._refused = refused  # (what, limit): counted and logged by the session ledger
        self.open: Counter[str] = Counter()
        self._counted: dict[Any, str] = {}  # transport → its address, while it counts
        self._watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> None:
        self._watchers.append(watcher)

    def install(self) -> bool:
        """Count, cap and watch every connection from now on; call before the server listens.
        False on an asyncua without the two names it hooks (the start goes on: asyncua's own
        server-wide cap stays, and the log says what is lost); the channel guard, which needs them
        too, refuses a --security start before this (asyncua_seams.check)."""
        gone = asyncua_seams.missing_of(self._server, asyncua_seams.CHANNEL_SEAMS)
        if gone:
            log.warning(
                "opcua_client_addresses_unknown",
                lacking=gone,
                effect="anonymous callers are one client; no per-client connection cap",
            )
            return False
        iserver = self._server.iserver
        iserver.asyncio_transports = _Transports(self, iserver.asyncio_transports)
        return True

    def admit(self, transport: Any) -> None:
        address = peer_of(transport)[0]
        if self.open[address] >= self.per_client:
            self._refused("connections_per_client", self.per_client)
            transport.close()  # asyncua then loses it, and takes it off the list as for any other
            return
        self.open[address] += 1
        self._counted[transport] = address
        for watcher in self._watchers:
            watcher(transport)

    def release(self, transport: Any) -> None:
        address = self._counted.pop(transport, None)
        if address is not None:
            self.open[address] -= 1
            if self.open[address] <= 0:
                del self.open[address]


class _Transports(list[Any]):
    """The internal server's transport list, telling the connections of each one made and lost."""

    def __init__(self, connections: ClientConnections, existing: list[Any]) -> None:
        super().__init__(existing)
        self._connections = connections

    def append(self, transport: Any) -> None:
        super().append(transport)
        self._connections.admit(transport)

    def remove(self, transport: Any) -> None:
        super().remove(transport)
        self._connections.release(transport)
