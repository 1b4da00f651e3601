"""`linebridge station list|show` against a running bridge's OPC UA server, as an engineer at a
shell: states, units, quality, and a PLC that stops answering shown as such."""

from __future__ import annotations

import asyncio

from bridge.domain.events import AlarmChanged
from bridge.domain.model import OrderState
from bridge.handshake import PlcState
from tests.integration.opcua_rig import opcua_rig
from tests.integration.shell import cli


async def shell(url: str, *args: str) -> tuple[int, str]:
    code, out, err = await cli("station", *args, "--endpoint", url)
    return code, out + err


def row(text: str, first: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.split() and line.split()[0] == first]
    return line.split()


async def test_station_list_and_show_tell_state_units_and_quality(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        await rig.bridge.submit("SHELL-1", "AC-W", {"capacity_btu": 18000})
        async with asyncio.timeout(30):
            await rig.bridge.wait_idle()
        assert rig.bridge.get("SHELL-1").state == OrderState.COMPLETED
        # The last status the engine read showed coil's step done; the State follows the next status
        # poll after the acknowledge (up to handshake.idle_status_interval_s later)
        link, state = rig.bridge.links["coil"], rig.node("Plant.Lines.ac_line.Stations.coil.State")
        async with asyncio.timeout(10):
            while link.last_status is None or link.last_status.state != PlcState.IDLE:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            while await state.read_value() != 1:  # noqa: ASYNC110 - idle; a Read per try, bounded
                await asyncio.sleep(0.05)

        code, listed = await shell(rig.url, "list")
        assert code == 0, listed
        assert [line.split()[0] for line in listed.splitlines()[1:]] == list(ac_mapping.stations)
        assert row(listed, "coil")[:3] == ["coil", "idle", "answers"]
        assert int(row(listed, "coil")[4]) >= 1  # its PLC's cycle count

        code, shown = await shell(rig.url, "show", "coil")
        assert code == 0, shown
        assert shown.splitlines()[0].startswith("coil  idle  PLC answers  order -  cycles ")
        temp = row(shown, "furnace_temp_c")
        assert temp[2:4] == ["°C", "good"]
        assert 590 < float(temp[1]) < 620
        assert len(temp[1].partition(".")[2]) == 1  # the mapping's precision: 1 digit after the point
        assert row(shown, "state")[1:3] == ["idle", "good"]  # an enumeration shown by name
        assert row(shown, "coil_rows")[1:3] == ["3", "good"]  # the last step's parameter (18000 BTU)
        assert row(shown, "fin_pitch_mm")[2] == "mm"

        await rig.line["pack"].stop()  # its PLC goes away
        async with asyncio.timeout(20):
            while rig.bridge.links["pack"].counters.connected:  # noqa: ASYNC110 - polls state, bounded
                await asyncio.sleep(0.05)
        code, listed = await shell(rig.url, "list")
        assert row(listed, "pack")[:3] == ["pack", "offline", "silent"]
        code, shown = await shell(rig.url, "show", "pack")
        assert "PLC does not answer" in shown.splitlines()[0]
        stock = row(shown, "label_stock")
        assert stock[2:5] == ["labels", "bad", "(BadCommunicationError)"], stock

        code, refused = await shell(rig.url, "show", "oven")
        assert code == 1
        assert "no station 'oven'" in refused


async def test_alarm_list_ack_confirm_shelve_and_history_at_a_shell(ac_mapping, tmp_path):
    async with opcua_rig(ac_mapping, tmp_path / "data") as rig:
        changes = rig.bridge.events.subscribe("test", AlarmChanged)
        await rig.bridge.write_setpoint("coil", "furnace_setpoint_c", 650)  # the furnace runs hot
        async with asyncio.timeout(10):
            while not rig.bridge.alarms.get("coil.furnace_temp_c").active:
                await changes.get()

        code, out, err = await cli("alarm", "list", "--endpoint", rig.url)
        assert code == 0, err
        assert row(out, "HIGH")[:5] == ["HIGH", "700", "coil.furnace_temp_c", "active", "unacked"]
        assert "above its high limit 630 °C" in out
        code, listed = await shell(rig.url, "list")
        assert row(listed, "coil")[6] == "1"  # one active alarm
        assert row(listed, "chassis")[6] == "0"
        code, shown = await shell(rig.url, "show", "coil")
        assert row(shown, "HIGH")[2] == "coil.furnace_temp_c"

        alarm = ("coil.furnace_temp_c", "--endpoint", rig.url)
        assert (await cli("alarm", "ack", *alarm, "-c", "burner looked at"))[:2] == (
            0, "coil.furnace_temp_c: acknowledged\n"
        )  # fmt: skip
        code, out, err = await cli("alarm", "ack", *alarm)
        assert (code, err.strip()) == (1, "coil.furnace_temp_c: ack refused (BadConditionBranchAlreadyAcked)")
        assert (await cli("alarm", "confirm", *alarm, "-c", "trimmed"))[0] == 0
        assert (await cli("alarm", "shelve", *alarm, "--hours", "2"))[
            1
        ] == "coil.furnace_temp_c: shelved for 2 h\n"
        assert rig.bridge.alarms.get("coil.furnace_temp_c").shelved
        code, out, err = await cli("alarm", "list", "--endpoint", rig.url)
        assert out.splitlines()[-1] == "out of service: coil.furnace_temp_c shelved, 120 min left (active)"
        assert (await cli("alarm", "unshelve", *alarm))[0] == 0
        assert (await cli("alarm", "disable", *alarm))[:2] == (0, "coil.furnace_temp_c: disabled\n")
        code, out, err = await cli("alarm", "list", "--endpoint", rig.url)
        # still active, but no operator's to answer: named only as out of service
        assert out.splitlines()[1:] == [
            "no alarm waits for an operator", "out of service: coil.furnace_temp_c disabled (active)"
        ]
        code, out, err = await cli("alarm", "disable", *alarm)
        assert (code, err.strip()) == (
            1, "coil.furnace_temp_c: disable refused (BadConditionAlreadyDisabled)"
        )  # fmt: skip
        assert (await cli("alarm", "enable", *alarm))[:2] == (0, "coil.furnace_temp_c: enabled\n")
        code, out, err = await cli("alarm", "ack", "coil.nothing", "--endpoint", rig.url)
        assert code == 1
        assert err.startswith("no alarm 'coil.nothing' waits for an operator (waiting: coil.furnace_temp_c")
        code, out, err = await cli("alarm", "disable", "coil.nothing", "--endpoint", rig.url)
        assert (code, err.strip()) == (
            1, "no alarm 'coil.nothing' on this line (STATION.NAME, as the mapping names it)"
        )  # fmt: skip
    code, out, err = await cli(
        "alarm", "history", "coil.furnace_temp_c", "--data-dir", str(tmp_path / "data")
    )
    assert code == 0, err
    whats = [line.split()[2] for line in out.splitlines()]
    assert whats == ["activated", "acknowledged", "confirmed", "shelved", "unshelved", "disabled", "enabled"]
    assert out.splitlines()[1].endswith("by anonymous: burner looked at")
