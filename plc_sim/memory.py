"""A simulated PLC's memory: pymodbus SimDevice blocks sized from the mapping, and typed access.

Addresses are zero-based protocol addresses, as in the mapping: no hidden +1 anywhere.
The PLC logic reads and writes through the server's own datastore calls, flagged as internal so
the request hook (fault injection, write detection) leaves them alone.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

from bridge.handshake import COMMAND_REGISTERS, STATUS_REGISTERS
from bridge.mapping import codec
from bridge.mapping.fields import RegisterField
from bridge.mapping.model import StationType
from bridge.mapping.vocabulary import BIT_TABLES
from bridge.mapping.wire_plan import READ_FUNCTION

# Set in the PLC's own task: its datastore calls are not client requests.
internal_access: contextvars.ContextVar[bool] = contextvars.ContextVar("internal_access", default=False)


def table_sizes(kind: StationType, control_address: int, control_count: int) -> dict[str, int]:
    """How many addresses each table needs: up to the highest one the map (or control) uses."""
    ends = {"coil": 0, "discrete_input": 0, "holding": 0, "input": 0}
    hs = kind.handshake
    ends["holding"] = max(hs.command_address + COMMAND_REGISTERS, control_address + control_count)
    ends["input"] = hs.status_address + STATUS_REGISTERS
    for _, _, f in kind.fields():
        ends[f.table] = max(ends[f.table], f.address + f.register_count)
    return ends


def build_device(sizes: dict[str, int], device_id: int, action: SimAction) -> SimDevice:
    def registers(n: int) -> list[SimData]:
        return [SimData(0, count=max(n, 1), datatype=DataType.REGISTERS)]

    def bits(n: int) -> list[SimData]:
        return [SimData(0, count=max(16, -(-n // 16) * 16), values=False, datatype=DataType.BITS)]

    return SimDevice(
        id=device_id,
        simdata=(
            bits(sizes["coil"]),
            bits(sizes["discrete_input"]),
            registers(sizes["holding"]),
            registers(sizes["input"]),
        ),
        action=action,
    )


class PlcMemory:
    """Typed reads and writes of one device's tables, as the PLC program sees them."""

    def __init__(self, server: ModbusTcpServer, device_id: int) -> None:
        self._server = server
        self._device_id = device_id

    async def read(self, table: str, address: int, count: int) -> list[int] | list[bool]:
        token = internal_access.set(True)
        try:
            return await self._server.async_getValues(self._device_id, READ_FUNCTION[table], address, count)
        finally:
            internal_access.reset(token)

    async def write(self, table: str, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        token = internal_access.set(True)
        try:
            await self._server.async_setValues(self._device_id, READ_FUNCTION[table], address, list(values))  # type: ignore[arg-type]
        finally:
            internal_access.reset(token)

    async def read_field(self, f: RegisterField) -> Any:
        if f.table in BIT_TABLES:
            return bool((await self.read(f.table, f.address, 1))[0])
        return codec.decode(f, [int(w) for w in await self.read(f.table, f.address, f.register_count)])

    async def write_fields(self, values: Sequence[tuple[RegisterField, Any]]) -> None:
        """Several fields at once, one write per run of adjacent registers: a refresh of a hundred
        telemetry values must not keep this simulated line from answering for milliseconds."""
        runs: list[tuple[str, int, list[Any]]] = []
        for f, value in sorted(values, key=lambda item: (item[0].table, item[0].address)):
            words = [bool(value)] if f.table in BIT_TABLES else codec.encode(f, value)
            if runs and runs[-1][0] == f.table and runs[-1][1] + len(runs[-1][2]) == f.address:
                runs[-1][2].extend(words)
            else:
                runs.append((f.table, f.address, list(words)))
        for table, address, words in runs:
            await self.write(table, address, words)

    async def write_field(self, f: RegisterField, value: Any) -> None:
        await self.write_fields([(f, value)])
