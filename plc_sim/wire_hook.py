"""What a Modbus request does to a simulated PLC before pymodbus applies it: the fault registers
written, the wire faults (a dropped connection, a corrupted read, a clamped setpoint, a delay, an
exception answer), a start noticed for the scan, and what an observer is told (`SimulatedPlc`'s
attributes; a part of it kept apart because it is the wire, not the program)."""

from __future__ import annotations

import asyncio

from pymodbus.constants import ExcCodes

from bridge.handshake import Command
from plc_sim.faults import CONTROL_REGISTERS
from plc_sim.memory import internal_access

_WRITE_FCS = frozenset({5, 6, 15, 16, 22, 23})


class RequestHook:
    """Part of `SimulatedPlc` (plc.py), on its attributes; pymodbus calls `_on_request` first."""

    async def _on_request(
        self,
        function_code: int,
        _start: int,
        address: int,
        count: int,
        _registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if internal_access.get():
            return None
        if values is not None or function_code not in _WRITE_FCS:  # a write's read half: the same request
            self.requests.append((function_code, address))
            self.request_spans.append((function_code, address, count if values is None else len(values)))
        is_write = values is not None and function_code in _WRITE_FCS
        holding = function_code in (3, 6, 16, 22, 23)
        touches_control = (
            holding
            and address < self.control_address + CONTROL_REGISTERS
            and (address + count > self.control_address)
        )
        if touches_control:
            if is_write:
                assert values is not None
                for i, value in enumerate(values):
                    offset = address + i - self.control_address
                    if 0 <= offset < CONTROL_REGISTERS:
                        self.faults.set_register(offset, int(value))
                self._wake.set()
            return None
        if self.faults.drop_next > 0:
            self.faults.drop_next -= 1
            await self.memory.write("holding", self.control_address + 3, [self.faults.drop_next])
            self._log.info("fault_connection_dropped", function_code=function_code, address=address)
            self.drop_connections()
            await self._notify_waiters()
            return None
        if self.faults.corrupt_next and function_code in (3, 23) and values is None:
            await self._corrupt_first_parameter(_start, address, count, _registers)
        if self.faults.clamp_setpoints and is_write and values:
            self._clamp_setpoint(function_code, address, count, values)
        if self.faults.delay_ms:
            await asyncio.sleep(self.faults.delay_ms / 1000)
        if self.faults.exception_code:
            try:
                return ExcCodes(self.faults.exception_code)
            except ValueError:
                return ExcCodes.DEVICE_FAILURE
        if is_write:
            command = self.kind.handshake.command_address + Command.START_SEQ
            if function_code in (6, 16, 23) and address <= command < address + len(values or []):
                self._start_written = True
            self._wake.set()
        if self.observer is not None:
            self._classify(function_code, address, count, values)
        return None

    def _classify(self, function_code: int, address: int, count: int, values: object) -> None:
        table = {
            1: "coil",
            2: "discrete_input",
            3: "holding",
            4: "input",
            5: "coil",
            6: "holding",
            15: "coil",
            16: "holding",
            23: "holding",
        }.get(function_code)
        if table is None:
            return
        # Writes carry their values; a read's count is in registers (bit reads: approximately).
        end = address + (count if values is None else len(values))  # type: ignore[arg-type]
        if values is not None:
            command = self.kind.handshake.command_address
            for offset, name in enumerate(("start_written", "ack_written", "abort_written")):
                if table == "holding" and address <= command + offset < end:
                    self._observe(name)
            if any(t == table and a < end and address < b for t, a, b in self._parameter_spans):
                self._observe("parameters_written")
            if any(t == table and a < end and address < b for t, a, b in self._setpoint_spans):
                self._observe("setpoints_written")
        elif any(t == table and a < end and address < b for t, a, b in self._result_spans):
            self._observe("results_read")

    def _clamp_setpoint(
        self, function_code: int, address: int, count: int, values: list[int] | list[bool]
    ) -> None:
        """Alter a setpoint write before it lands (pymodbus applies this very list after the hook)."""
        table = "coil" if function_code in (5, 15) else "holding"
        if not any(t == table and a < address + count and address < b for t, a, b in self._setpoint_spans):
            return
        values[0] = (not values[0]) if table == "coil" else int(values[0]) ^ 0x0001
        self._log.info("fault_setpoint_clamped", table=table, address=address)

    async def _corrupt_first_parameter(
        self, start: int, address: int, count: int, registers: list[int]
    ) -> None:
        """Flip the low bit of the first holding parameter if this read covers it."""
        first = min(
            (self.fields[n] for n in self.kind.parameters if self.fields[n].table == "holding"),
            key=lambda f: f.address,
            default=None,
        )
        if first is None or not address <= first.address < address + count:
            return
        registers[first.address - start] ^= 0x0001
        await self.set_fault("corrupt_next", 0)
        self._log.info("fault_parameter_corrupted", address=first.address)
