"""The program of a simulated PLC, as a scan: every client write (and every due timer) wakes a scan
that compares the command block with the status it last published, so lost or repeated edges
cannot start a step twice; and the values it puts in results and telemetry (`SimulatedPlc`'s
attributes; a part of it kept apart because it is the program, not the server around it)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge.errors import CodecError
from bridge.handshake import COMMAND_REGISTERS, Command, PlcState, ResultCode, StatusBlock
from bridge.mapping import codec
from bridge.mapping.fields import RegisterField
from bridge.mapping.vocabulary import BIT_TABLES
from plc_sim.memory import internal_access


class PlcProgram:
    """Part of `SimulatedPlc` (plc.py), on its attributes; `start()` runs `_scan_loop`."""

    async def _scan_loop(self) -> None:
        internal_access.set(True)
        while True:
            try:
                async with asyncio.timeout(self._sleep_s()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._scan()
            except Exception:  # a simulator bug must not silently kill the PLC
                self._log.exception("plc_scan_failed")
                raise

    def _sleep_s(self) -> float:
        now = time.monotonic()
        deadlines = [self._telemetry_due]
        if self._late_results is not None:
            deadlines.append(self._late_results[0])
        if self.faults.self_ack and self._status.state == PlcState.DONE:
            deadlines.append(now)
        if self.heartbeat is not None and self._beat_at is not None and not self.bridge_lost:
            deadlines.append(self._beat_at + self.heartbeat.lost_after_s)
        if self._due is not None and not self.faults.stall:
            deadlines.append(self._due)
        return max(0.0, min(deadlines) - now)

    async def _scan(self) -> None:
        words = [
            int(w)
            for w in await self.memory.read("holding", self.kind.handshake.command_address, COMMAND_REGISTERS)
        ]
        start_seq, ack_seq, abort_seq = (
            words[Command.START_SEQ],
            words[Command.ACK_SEQ],
            words[Command.ABORT_SEQ],
        )
        if self.heartbeat is not None and not self.faults.ignore_heartbeat:
            await self._watch_heartbeat(self.heartbeat.address, self.heartbeat.lost_after_s)
        status = self._status
        repeated, self._start_written = self._start_written and bool(self.faults.repeat_start), False
        if self._late_results is not None and time.monotonic() >= self._late_results[0]:
            params, self._late_results = self._late_results[1], None
            await self._write_results(params)
        if status.state == PlcState.BUSY:
            if abort_seq == status.accepted_seq:
                await self._finish(ResultCode.ABORTED)
            elif self._due is not None and time.monotonic() >= self._due and not self.faults.stall:
                await self._finish(self._result_code)
        elif status.state == PlcState.DONE and ack_seq == status.done_seq:
            await self._set_status(state=PlcState.IDLE, acked_seq=ack_seq)
        elif status.state == PlcState.DONE and self.faults.self_ack:
            await self._set_status(state=PlcState.IDLE)
        if self._status.state == PlcState.IDLE and (
            start_seq not in (0, self._status.accepted_seq) or (repeated and start_seq != 0)
        ):
            await self._accept(start_seq)
        if time.monotonic() >= self._telemetry_due:
            await self._refresh_telemetry()

    async def _watch_heartbeat(self, address: int, lost_after_s: float) -> None:
        """What docs/plc-guide.md asks of a PLC: the bridge counts as gone once its heartbeat has
        not changed for `lost_after_s`; a running step finishes, new starts are refused, and the
        PLC says so, until the heartbeat moves again."""
        (value,) = await self.memory.read("holding", address, 1)
        now = time.monotonic()
        if self._beat is not None and value != self._beat:
            first, self._beat_at = self._beat_at is None, now
            if first:
                await self._notify_waiters()
            if self.bridge_lost:
                self._log.info("bridge_heartbeat_back", was=self.bridge_lost)
                self.bridge_lost = ""
                await self._notify_waiters()
        self._beat = int(value)
        if self._beat_at is not None and not self.bridge_lost and now - self._beat_at > lost_after_s:
            self.bridge_lost = f"no bridge heartbeat for {now - self._beat_at:.1f} s (holding {address})"
            self._log.warning("bridge_heartbeat_lost", reason=self.bridge_lost)
            await self._notify_waiters()

    async def _accept(self, seq: int) -> None:
        """Latch the parameters, check them and start the cycle of step `seq`."""
        reexecuted = self._status.reexecuted_count + (1 if seq in self._run_since_power_up else 0)
        self._run_since_power_up.add(seq)
        self.executed[seq] += 1
        await self._set_status(
            state=PlcState.BUSY,
            accepted_seq=seq,
            result_code=0,
            executed_count=self._status.executed_count + 1,
            reexecuted_count=reexecuted,
        )
        self._started_at = time.monotonic()
        self._due = self._started_at + self.cycle_time_s
        params = await self._read_parameters()
        bound = self._log.bind(seq=seq)
        if self.bridge_lost:
            self._result_code = ResultCode.BRIDGE_LOST
            self._due = self._started_at
            self.last_reject_reason = self.bridge_lost
            bound.warning("start_refused_bridge_lost", reason=self.bridge_lost)
        elif params is None:
            self._result_code = ResultCode.PARAMETERS_REJECTED
            self._due = self._started_at
            bound.warning("step_rejected", reason=self.last_reject_reason)
        elif self.faults.reject_next:
            self._result_code = self.faults.reject_next
            self._due = self._started_at
            await self.set_fault("reject_next", 0)
            bound.info("step_rejected_by_fault", result_code=self._result_code)
        elif self._random.random() * 1000 < self.faults.fault_permille:
            self._result_code = ResultCode.STATION_FAULT
        else:
            self._result_code = ResultCode.OK
            if self.faults.done_early:  # results cleared now, written only after "done" shows
                await self._clear_results()
                self._late_results = (float("inf"), params)
            else:
                await self._write_results(params)
        bound.info("step_accepted", cycle_time_s=self.cycle_time_s)
        if self._due <= time.monotonic() and not self.faults.stall:
            await self._finish(self._result_code)

    async def _read_parameters(self) -> dict[str, Any] | None:
        """The parameters as written, or None (with the reason kept) if one is not acceptable."""
        params: dict[str, Any] = {}
        for name in self.kind.parameters:
            f = self.fields[name]
            try:
                value = await self.memory.read_field(f)
                if f.is_numeric and not self.faults.accept_any:
                    codec.check_range(f, value)
            except CodecError as exc:
                self.last_reject_reason = f"{name}: {exc}"
                return None
            params[name] = value
        return params

    async def _write_results(self, params: dict[str, Any]) -> None:
        values = {**params, **await self._setpoints()}
        for name in self.kind.results:
            f = self.fields[name]
            if f.sim is not None:
                await self.memory.write_field(f, self._simulated_value(f, values))

    async def _clear_results(self) -> None:
        await self.memory.write_fields([(self.fields[n], _zero(self.fields[n])) for n in self.kind.results])

    async def _setpoints(self) -> dict[str, Any]:
        """The setpoints as they stand in memory: a client may have changed them at any time."""
        values: dict[str, Any] = {}
        for name in self.kind.setpoints:
            try:
                values[name] = await self.memory.read_field(self.fields[name])
            except CodecError:  # garbage written by a client: telemetry following it shows nominal 0
                values[name] = 0
        return values

    async def _finish(self, code: int) -> None:
        self._due = None
        self._cycle_count += 1
        self._last_cycle_ms = round((time.monotonic() - self._started_at) * 1000)
        await self._set_status(state=PlcState.DONE, done_seq=self._status.accepted_seq, result_code=code)
        if self._late_results is not None:
            self._late_results = (time.monotonic() + 0.2, self._late_results[1])
        self._log.info("step_done", seq=self._status.done_seq, result_code=code)
        self._observe("step_done")

    async def _set_status(self, **changes: Any) -> None:
        self._status = StatusBlock(**{**self._status.__dict__, **changes})
        await self._publish_status()
        # A PLC updates its own state and counter registers in the same scan: telemetry that shows
        # the state never lags the status block by a telemetry period.
        await self._refresh_telemetry(step_sourced_only=True)

    async def _publish_status(self) -> None:
        status = self._status
        if self.faults.no_echo:
            status = StatusBlock(status.state, 0, 0, status.result_code, 0, status.executed_count, 0)
        await self.memory.write("input", self.kind.handshake.status_address, status.to_registers())
        await self._notify_waiters()

    async def _notify_waiters(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _refresh_telemetry(self, *, step_sourced_only: bool = False) -> None:
        """Every simulated value on the telemetry period; at a step's end only those that follow the
        step (state, cycle count, cycle time): noise redrawn at every step end kept a line of PLCs
        at zero cycle time busy drawing values no poll would read, and put the period off for ever."""
        if not step_sourced_only:
            self._telemetry_due = time.monotonic() + self.telemetry_period_s
        # only values that follow a setpoint read them; step-sourced ones never do
        setpoints = {} if step_sourced_only else await self._setpoints()
        simulated = self.step_sourced_fields if step_sourced_only else self.simulated_fields
        await self.memory.write_fields([(f, self._simulated_value(f, setpoints)) for f in simulated])

    def _simulated_value(self, f: RegisterField, params: dict[str, Any]) -> Any:
        sim = f.sim
        assert sim is not None
        if sim.source is not None:
            if sim.source == "state":
                state = self._status.state
                return state.name.lower() if f.type == "enum" else int(state)
            return {
                "cycle_count": self._cycle_count,
                "last_cycle_ms": self._last_cycle_ms,
                "executed_count": self._status.executed_count,
            }[sim.source]
        if sim.constant is not None:
            return sim.constant
        if sim.uniform is not None:
            value: float = self._random.uniform(*sim.uniform)
        elif sim.follow is not None:
            value = params[sim.follow] * sim.gain + self._random.uniform(-sim.noise, sim.noise)
        else:
            assert sim.nominal is not None
            value = sim.nominal + self._random.uniform(-sim.noise, sim.noise)
        return _fit(f, value)


def _zero(f: RegisterField) -> Any:
    """A field's "nothing here yet" value, one that encodes."""
    if f.type == "bool":
        return False
    if f.type == "string":
        return ""
    if f.type == "enum":
        return next(iter(f.values or {"": 0}))
    return _fit(f, 0.0)


def _fit(f: RegisterField, value: float) -> Any:
    """A simulated number clamped into the field's range and type, so it always encodes."""
    if f.min is not None:
        value = max(value, f.min)
    if f.max is not None:
        value = min(value, f.max)
    if f.table in BIT_TABLES or f.type == "bool":
        return bool(value)
    if f.type.startswith("float"):
        return value
    return round(value) if f.scale == 1.0 and f.offset == 0.0 else round(value / f.scale) * f.scale
