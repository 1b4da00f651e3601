"""The cases `linebridge plc check` drives a PLC through (docs/handshake.md), each a part of
`HandshakeCheck` (check.py), which runs them and holds the steps they are made of."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from bridge.commissioning.outcomes import CaseFailed, CaseSkipped, describe
from bridge.errors import CodecError, StationError
from bridge.handshake import PlcState, ResultCode, StatusBlock
from bridge.mapping import codec
from bridge.mapping.fields import RegisterField
from bridge.mapping.vocabulary import BIT_TABLES


class HandshakeCases:
    """Part of `HandshakeCheck` (check.py), made of its steps; each case returns what it saw."""

    async def _reachable(self) -> str:
        status = await self.link.status()
        first = describe(status)
        await self._leave_idle()
        return f"status block answers ({first}); idle"

    async def _normal_step(self) -> str:
        seq, before = await self._start()
        began = time.monotonic()
        seen = await self._taken(seq, before)
        if seen.state == PlcState.IDLE and seen.done_seq != seq:
            raise CaseFailed(f"accepted_seq {seq} shown while idle: a taken start shows busy (or done)")
        done = await self._until_done(seq, before)
        took = time.monotonic() - began
        if done.result_code != ResultCode.OK:
            raise CaseFailed(f"step {seq} with valid parameters ended with result_code {done.result_code}")
        results = await self.link.read_results()
        await self._acknowledge(seq)
        shown = ", ".join(f"{k}={_shown(v)}" for k, v in results.items()) or "none"
        return f"step {seq}: accepted, done with result 0 in {took:.2f} s, results {shown}, acknowledged"

    async def _result_read_back(self) -> str:
        if not self.kind.results:
            raise CaseSkipped("the station type has no results")
        seq, before = await self._start()
        await self._until_done(seq, before)
        at_done = await self.link.read_results()
        await asyncio.sleep(self.settle_s)
        await self.link.status()
        later = await self.link.read_results()
        if later != at_done:
            raise CaseFailed(
                f"results changed after done_seq showed {seq}: {at_done} at done, {later} {self.settle_s:g} s"
                " later; the PLC must write results before it shows done"
            )
        await self._acknowledge(seq)
        after_ack = await self.link.read_results()
        if after_ack != at_done:
            raise CaseFailed(
                f"results changed with the acknowledge: {at_done} before, {after_ack} after; they must"
                " stay until the next start"
            )
        return f"step {seq}: results read at done, {self.settle_s:g} s later and after the acknowledge agree"

    async def _repeated_start(self) -> str:
        seq, before = await self._start()
        await self._until_done(seq, before)
        idle = await self._acknowledge(seq)
        await self.link.start(seq)  # as a retried request or a restarting bridge writes it again

        def ran_again(s: StatusBlock) -> str | None:
            if s.executed_count != idle.executed_count or s.reexecuted_count != idle.reexecuted_count:
                return f"start_seq {seq} written again ran step {seq} again"
            if s.state != PlcState.IDLE:
                return f"start_seq {seq} written again left the PLC {s.state.name.lower()}"
            return None

        await self._watch(ran_again)
        return f"start_seq {seq} written again after its step: ignored for {self.settle_s:g} s"

    async def _lost_acknowledge(self) -> str:
        seq, before = await self._start()
        done = await self._until_done(seq, before)

        def left_done(s: StatusBlock) -> str | None:
            if s.state != PlcState.DONE or s.done_seq != seq:
                return f"without ack_seq {seq} the PLC left done"
            return None

        await self._watch(left_done)
        following = self._next()
        await self.link.write_parameters(self.parameters)
        await self.link.start(following)

        def took_early(s: StatusBlock) -> str | None:
            if s.accepted_seq == following or s.executed_count != done.executed_count:
                return (
                    f"start_seq {following} written while step {seq} waited for its ack_seq was taken at once"
                )
            return left_done(s)

        await self._watch(took_early)
        await self.link.acknowledge(seq)
        await self.link.acknowledge(seq)  # a retried acknowledge is harmless
        await self._until_done(following, done)
        await self._acknowledge(following)
        return (
            f"step {seq} stayed done without its ack_seq for {self.settle_s:g} s; start_seq {following}"
            " written meanwhile waited, then ran once after the acknowledge (written twice)"
        )

    async def _rejected_parameters(self) -> str:
        found = self._out_of_range()
        if found is None:
            raise CaseSkipped("no parameter has a min or max the PLC could be tested against")
        name, f, value = found
        await self.link.write_parameters(self.parameters)
        await self._write_raw(f, value)
        seq = self._next()
        before = await self.link.status()
        await self.link.start(seq)
        done = await self._until_done(seq, before)
        if done.result_code == ResultCode.OK:
            raise CaseFailed(
                f"step {seq} ran with {name} = {value:g} (range {_range(f)}) and result_code 0; the PLC"
                " must check the parameter set and refuse it (result_code 1, parameters_rejected)"
            )
        await self._acknowledge(seq)
        await self.link.write_parameters(self.parameters)  # leave valid values in place
        note = "" if done.result_code == ResultCode.PARAMETERS_REJECTED else " (1 is the usual code)"
        return f"{name} = {value:g} (range {_range(f)}) refused with result_code {done.result_code}{note}"

    async def _bridge_restart(self) -> str:
        seq, before = await self._start()
        await self._taken(seq, before)
        await self.link.close()  # the bridge goes away mid-step: its connection closes
        self.link = self._new_link()
        seen = await self.link.status()
        if seq not in (seen.accepted_seq, seen.done_seq):
            raise CaseFailed(
                f"after the bridge's connection closed the PLC no longer shows step {seq}"
                f" ({describe(seen)}): it must keep its handshake state when a client goes away"
            )
        await self.link.start(seq)  # a bridge back on a lost journal writes its start again
        try:
            await self._until_done(seq, before)
        except CaseFailed as exc:  # e.g. it forgot the step and, its start still there, ran it again
            raise CaseFailed(f"after the bridge's connection closed: {exc}") from None
        await self._acknowledge(seq)
        phase = "running" if seen.done_seq != seq else "done"
        return (
            f"step {seq} was still {phase} on a new connection; its start written again did not run it"
            " twice; acknowledged"
        )

    async def _heartbeat_lost(self) -> str:
        beat = self.kind.handshake.heartbeat
        if beat is None:
            raise CaseSkipped("the mapping declares no heartbeat for this station type")
        self._beating.clear()
        try:
            await asyncio.sleep(beat.lost_after_s + 2 * beat.period_s)
            seq, before = await self._start()
            taken = await self._until(
                lambda s: s.done_seq == seq or s.executed_count != before.executed_count,
                f"an answer to start_seq {seq} with the heartbeat stopped for {beat.lost_after_s:g} s",
                self.scan_timeout_s,
            )
        except CaseFailed as exc:
            why = "a PLC refuses the start at once (result_code 5), it does not hold it"
            raise CaseFailed(f"{exc}: {why}") from None
        finally:
            self._beating.set()
        done = await self._until_done(seq, before) if taken.done_seq != seq else taken
        if done.result_code != ResultCode.BRIDGE_LOST:
            raise CaseFailed(
                f"step {seq} was started with the heartbeat (holding {beat.address}) unchanged for"
                f" {beat.lost_after_s:g} s and ended with result_code {done.result_code}; the PLC must refuse"
                " it with result_code 5 (bridge_lost)"
            )
        await asyncio.sleep(2 * beat.period_s)  # the heartbeat moves again
        await self._acknowledge(seq)
        again, before = await self._start()
        after = await self._until_done(again, before)
        await self._acknowledge(again)
        if after.result_code != ResultCode.OK:
            raise CaseFailed(
                f"with the heartbeat back, step {again} ended with result_code {after.result_code}"
            )
        return (
            f"heartbeat stopped {beat.lost_after_s + 2 * beat.period_s:g} s: start_seq {seq} refused with"
            f" result_code 5; heartbeat back: step {again} ran with result 0"
        )

    # -- an out-of-range parameter -----------------------------------------------------------------

    def _out_of_range(self) -> tuple[str, RegisterField, float] | None:
        fields = self.mapping.resolved_fields(self.station)
        for name in self.kind.parameters:
            f = fields[name]
            if not f.is_numeric or f.table in BIT_TABLES:
                continue
            step = max(f.scale, 1.0)
            for value in (
                f.max + step if f.max is not None else None,
                f.min - step if f.min is not None else None,
            ):
                if value is None:
                    continue
                try:
                    codec.encode(f.model_copy(update={"min": None, "max": None}), value)
                except CodecError:
                    continue
                return name, f, value
        return None

    async def _write_raw(self, f: RegisterField, value: float) -> None:
        """Write `value` past the mapping's range into `f`'s registers, which the link would refuse."""
        words = codec.encode(f.model_copy(update={"min": None, "max": None}), value)
        ep = self.mapping.stations[self.station].endpoint
        client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=self.request_timeout_s, retries=1)
        try:
            if not await client.connect():
                raise StationError(f"cannot connect to {ep.host}:{ep.port}", station=self.station)
            reply = await client.write_registers(f.address, words, device_id=ep.device_id)
            if reply.isError():
                raise CaseFailed(f"writing {words} to holding {f.address} was refused: {reply}")
        finally:
            client.close()


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _range(f: RegisterField) -> str:
    return f"{'' if f.min is None else f'{f.min:g}'} .. {'' if f.max is None else f'{f.max:g}'}".strip()
