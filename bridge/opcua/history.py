"""Telemetry history in SQLite, through asyncua's history storage."""

from __future__ import annotations

import re

from asyncua import ua
from asyncua.server.history_sql import HistorySQLite


class TelemetryHistory(HistorySQLite):
    """asyncua 2.1's HistorySQLite names a node's table `{ns}_{identifier!r}`; for a string NodeId
    the repr's quotes then fail its own SQL-injection check. Our node ids are strings, so name
    the tables from the identifier's safe characters instead."""

    def _get_table_name(self, node_id: ua.NodeId) -> str:
        return f"{node_id.NamespaceIndex}_" + re.sub(r"[^A-Za-z0-9_]", "_", str(node_id.Identifier))
