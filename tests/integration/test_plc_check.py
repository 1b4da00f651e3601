"""`linebridge plc check` passes a PLC that follows the handshake and names the case a faulty one
breaks: against plc-sim, clean and with each of its handshake faults switched on."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.commissioning.check import CASES, HandshakeCheck
from bridge.handshake import PlcState
from bridge.mapping import LineMapping, apply_deployment
from bridge.mapping.model import Endpoint
from plc_sim.faults import Faults
from plc_sim.plc import SimulatedPlc


async def check(ac_mapping: LineMapping, station: str, **faults: int) -> tuple[dict[str, str], SimulatedPlc]:
    async with SimulatedPlc(ac_mapping, station, port=0, speed=0, seed=1, faults=Faults(**faults)) as plc:
        mapping = apply_deployment(ac_mapping, {station: Endpoint(host="127.0.0.1", port=plc.port)})
        async with asyncio.timeout(60):
            results = await HandshakeCheck(mapping, station, settle_s=0.2).run()
        return {r.case: f"{r.outcome}: {r.detail}" for r in results}, plc


@pytest.mark.parametrize("station", ["charge", "panel"])
async def test_a_conforming_plc_passes_every_case_and_is_left_idle(ac_mapping: LineMapping, station: str):
    outcomes, plc = await check(ac_mapping, station)
    assert list(outcomes) == list(CASES)
    assert all(o.startswith("passed") for o in outcomes.values()), outcomes
    assert plc.status.state == PlcState.IDLE
    assert plc.status.reexecuted_count == 0
    assert max(plc.executed.values()) == 1  # no step number ran twice
    if station == "panel":  # a string parameter, coils and discrete inputs: and every step used them
        assert "rejected_parameters" in outcomes
        assert "color_code = 5 (range 1 .. 4) refused with result_code 1" in outcomes["rejected_parameters"]


@pytest.mark.parametrize(
    ("fault", "case", "says"),
    [
        ("no_echo", "normal_step", "does not echo it: accepted_seq 0, not 1"),
        ("done_early", "result_read_back", "the PLC must write results before it shows done"),
        ("repeat_start", "repeated_start", "written again ran step"),
        ("self_ack", "lost_acknowledge", "without ack_seq 4 the PLC left done"),
        ("accept_any", "rejected_parameters", "and result_code 0; the PLC must check the parameter set"),
        ("forget_on_disconnect", "bridge_restart", "on a new connection the PLC no longer shows step"),
    ],
)
async def test_each_handshake_fault_fails_the_case_it_breaks(
    ac_mapping: LineMapping, fault: str, case: str, says: str
) -> None:
    outcomes, _ = await check(ac_mapping, "charge", **{fault: 1})
    assert outcomes[case].startswith("failed"), outcomes
    assert says in outcomes[case]
    if fault in ("done_early", "repeat_start", "accept_any", "forget_on_disconnect"):  # one thing wrong
        assert [c for c, o in outcomes.items() if o.startswith("failed")] == [case], outcomes
    if fault == "no_echo":  # a PLC that cannot be made idle: nothing further is tried
        assert all(outcomes[c].startswith("skipped") for c in CASES[2:]), outcomes


def test_the_command_reports_and_exits_non_zero_on_a_failure(ac_mapping: LineMapping) -> None:
    async def serve(faults: Faults, station: str, work):
        async with SimulatedPlc(ac_mapping, station, port=0, speed=0, seed=1, faults=faults) as plc:
            return await asyncio.to_thread(work, plc.port)

    def invoke(port: int):
        return CliRunner().invoke(
            app, ["plc", "check", "coil", "--endpoint", f"127.0.0.1:{port}", "--settle", "0.2"]
        )

    good = asyncio.run(serve(Faults(), "coil", invoke))
    assert good.exit_code == 0, good.output
    assert "coil at 127.0.0.1:" in good.output
    assert "handshake conforms" in good.output
    assert good.output.count("PASSED") == len(CASES)
    bad = asyncio.run(serve(Faults(accept_any=1), "coil", invoke))
    assert bad.exit_code == 1, bad.output
    assert "FAILED rejected_parameters" in bad.output
    assert "coil_rows = 7 (range 1 .. 6)" in bad.output
    refused = CliRunner().invoke(app, ["plc", "check", "coil", "--endpoint", "nowhere"])
    assert refused.exit_code == 2
    assert "expected HOST:PORT" in refused.output
