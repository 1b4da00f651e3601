"""Alarm rules without a server: the Part 9 state machine, limits with deadband and on-delay, and
the book following scans and orders into the real SQLite history."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bridge.alarms.book import AlarmBook, definitions
from bridge.alarms.limits import beyond, judge
from bridge.counters import LinkCounters
from bridge.domain import alarm_condition as cond
from bridge.domain.alarm_condition import AlarmDef, AlarmRefused, AlarmState, Refusal, Shelving
from bridge.domain.events import AlarmChanged, EventHub, OrderChanged, StationScanned
from bridge.domain.model import OrderEvent, OrderState
from bridge.journal import SqliteJournal
from bridge.mapping import load_mapping
from bridge.mapping.fields import LimitAlarms
from tests.conftest import AC_LINE

LIMITS = LimitAlarms.model_validate(
    {"high_high": {"limit": 680, "severity": 900}, "high": {"limit": 630, "severity": 700},
     "low": {"limit": 570, "severity": 500}, "deadband": 3, "on_delay_s": 2}
)  # fmt: skip


def test_limits_must_be_ordered_and_given() -> None:
    with pytest.raises(ValueError, match=r"high\.limit 700\.0 must lie below high_high\.limit 680\.0"):
        LimitAlarms.model_validate(
            {"high": {"limit": 700, "severity": 1}, "high_high": {"limit": 680, "severity": 2}}
        )
    with pytest.raises(ValueError, match="give at least one of"):
        LimitAlarms.model_validate({"deadband": 1})


def test_the_active_limit_holds_inside_its_deadband() -> None:
    assert beyond(LIMITS, 631, None) == "high"
    assert beyond(LIMITS, 629, None) is None
    assert beyond(LIMITS, 629, "high") == "high"  # inside the deadband: still high
    assert beyond(LIMITS, 626.9, "high") is None
    assert beyond(LIMITS, 681, "high") == "high_high"
    assert beyond(LIMITS, 678, "high_high") == "high_high"
    assert beyond(LIMITS, 676, "high_high") == "high"  # back below high-high, still above high
    assert beyond(LIMITS, 569, None) == "low"
    assert beyond(LIMITS, 572, "low") == "low"
    assert beyond(LIMITS, 573.5, "low") is None


def test_a_new_limit_waits_out_its_on_delay_a_milder_one_does_not() -> None:
    assert judge(LIMITS, 640, None, None, 100.0) == (None, ("high", 100.0))
    assert judge(LIMITS, 641, None, ("high", 100.0), 101.0) == (None, ("high", 100.0))
    assert judge(LIMITS, 641, None, ("high", 100.0), 102.0) == ("high", None)
    assert judge(LIMITS, 600, None, ("high", 100.0), 101.0) == (None, None)  # a spike: never active
    assert judge(LIMITS, 700, "high", None, 103.0) == ("high", ("high_high", 103.0))  # escalating waits
    assert judge(LIMITS, 650, "high_high", None, 104.0) == ("high", None)  # easing is at once
    assert judge(LIMITS, 500, "high", None, 105.0) == (None, ("low", 105.0))  # across: high is over


def state(kind: str = "offline") -> AlarmState:
    return AlarmState(AlarmDef("coil", kind, kind, 800), 0.0)  # type: ignore[arg-type]


def test_part9_transitions_and_refusals() -> None:
    s = cond.activate(state(), 1.0, 800, "down")
    assert s is not None
    assert s.active
    assert not s.acked
    assert not s.confirmed
    assert s.retain
    assert cond.activate(s, 2.0, 800, "down") is None
    with pytest.raises(AlarmRefused) as refused:
        cond.confirm(s, 2.0, "ann", "")
    assert refused.value.refusal is Refusal.NOT_ACKED
    s = cond.acknowledge(s, 3.0, "ann", "looking")
    assert s.acked
    assert s.user == "ann"
    assert s.comment == "looking"
    with pytest.raises(AlarmRefused, match="already acknowledged"):
        cond.acknowledge(s, 3.0, "ann", "")
    s = cond.clear(s, 4.0, "up")
    assert s is not None
    assert not s.active
    assert s.retain
    s = cond.confirm(s, 5.0, "bob", "fixed the cable")
    assert not s.retain
    again = cond.activate(s, 6.0, 800, "down again")
    assert again is not None
    assert not again.acked
    assert not again.confirmed
    assert again.comment == ""


def test_shelving() -> None:
    s = cond.shelve(state(), 1.0, "ann", 60)
    assert s.shelving is Shelving.TIMED
    assert s.unshelve_at == 61.0
    with pytest.raises(AlarmRefused, match="already shelved"):
        cond.shelve(s, 2.0, "ann", 30)
    assert cond.shelve_expired(s, 60.0) is None
    expired = cond.shelve_expired(s, 61.0)
    assert expired is not None
    assert not expired.shelved
    with pytest.raises(AlarmRefused, match="shelving time"):
        cond.shelve(state(), 1.0, "ann", 0)
    s = cond.shelve(cond.activate(state(), 1.0, 800, "down"), 2.0, "ann", None)  # type: ignore[arg-type]
    assert s.shelving is Shelving.ONESHOT
    cleared = cond.clear(s, 3.0, "up")
    assert cleared is not None
    assert cleared.shelving is Shelving.UNSHELVED
    with pytest.raises(AlarmRefused, match="not shelved"):
        cond.unshelve(cleared, 4.0, "ann")


def test_the_default_line_declares_its_alarms() -> None:
    found = {d.alarm_id: d for d in definitions(load_mapping(AC_LINE))}
    assert found["coil.furnace_temp_c"].kind == "limit"
    assert found["coil.furnace_temp_c"].unit == "°C"
    assert {"chassis.offline", "chassis.held", "chassis.plc_fault", "chassis.order_faulted"} <= set(found)
    assert "coil.cycle_count" not in found


def scan(station: str, online: bool = True, **telemetry: float) -> StationScanned:
    return StationScanned(
        station=station, online=online, read_at=0.0, telemetry=telemetry, before={}, changed=set(telemetry),
        setpoints={}, doubts={}, read=frozenset(telemetry), status=None, status_read_at=None,
        status_invalid=False, counters=LinkCounters(connected=online, last_error="" if online else "refused"),
    )  # fmt: skip


async def test_the_book_follows_scans_and_orders_and_keeps_history(tmp_path) -> None:
    mapping = load_mapping(AC_LINE)
    clock = [1000.0]
    hub, journal = EventHub(), SqliteJournal(tmp_path / "journal.sqlite")
    book = AlarmBook(mapping, hub, journal, lambda station: None, clock=lambda: clock[0])
    seen = hub.subscribe("test", AlarmChanged)
    await book.start()

    async def next_change() -> AlarmChanged:
        return await asyncio.wait_for(seen.get(), 5)

    try:
        hub.publish(scan("coil", furnace_temp_c=650.0))
        change = await next_change()
        assert (change.what, change.alarm.alarm_id) == ("activated", "coil.furnace_temp_c")
        assert change.alarm.limit == "high"
        assert change.alarm.severity == 700
        assert "650 °C above its high limit 630 °C" in change.alarm.message
        hub.publish(scan("coil", online=False))
        change = await next_change()
        assert (change.what, change.alarm.alarm_id) == ("activated", "coil.offline")
        assert "(refused)" in change.alarm.message
        book.acknowledge("coil.furnace_temp_c", "ann", "watching it")
        assert (await next_change()).what == "acknowledged"
        hub.publish(scan("coil", furnace_temp_c=605.0))  # back: offline clears, the limit clears
        changes = {(c.alarm.alarm_id, c.what) for c in (await next_change(), await next_change())}
        assert changes == {("coil.offline", "cleared"), ("coil.furnace_temp_c", "cleared")}
        assert [s.alarm_id for s in book.retained()] == ["coil.offline", "coil.furnace_temp_c"]
        failed = OrderEvent("A-1", OrderState.FAULTED, datetime.now(UTC), station="charge", result_code=2)
        hub.publish(OrderChanged(failed, None))  # type: ignore[arg-type]
        change = await next_change()
        assert change.alarm.alarm_id == "charge.order_faulted"
        assert "result code 2 (check_failed)" in change.alarm.message
        again = OrderEvent("A-2", OrderState.FAULTED, datetime.now(UTC), station="charge", result_code=1)
        hub.publish(OrderChanged(again, None))  # type: ignore[arg-type]
        change = await next_change()
        assert "order A-2 faulted" in change.alarm.message
        assert not change.alarm.acked  # the second fault is asked about again
        acked = book.acknowledge("charge.order_faulted", "ann", "")
        assert not acked.active
        assert acked.retain
    finally:
        await book.stop()
    history = journal.load_alarms("coil.furnace_temp_c")
    assert [(r["what"], r["user"], r["comment"]) for r in history] == [
        ("activated", "", ""),
        ("acknowledged", "ann", "watching it"),
        ("cleared", "ann", "watching it"),
    ]
    journal.close()

    again = AlarmBook(mapping, EventHub(), SqliteJournal(tmp_path / "journal.sqlite"), lambda s: None)
    await again.start()  # a restart takes up what waits for an operator
    try:
        assert not again.get("coil.furnace_temp_c").confirmed
        assert again.get("coil.furnace_temp_c").acked
        assert again.get("coil.offline").retain
        assert not again.get("coil.offline").active
        assert not again.get("chassis.offline").retain
    finally:
        await again.stop()
        again.journal.close()  # type: ignore[attr-defined]


def test_a_disabled_alarm_answers_nothing_but_enable() -> None:
    s = cond.activate(state(), 1.0, 800, "down")
    assert s is not None
    off = cond.disable(s, 2.0, "ann")
    assert (off.enabled, off.active, off.retain, off.user) == (False, True, False, "ann")
    for refused_call, refusal in (
        (lambda: cond.disable(off, 3.0, "bob"), Refusal.ALREADY_DISABLED),
        (lambda: cond.acknowledge(off, 3.0, "bob", ""), Refusal.DISABLED),
        (lambda: cond.confirm(off, 3.0, "bob", ""), Refusal.DISABLED),
        (lambda: cond.add_comment(off, 3.0, "bob", "x"), Refusal.DISABLED),
        (lambda: cond.shelve(off, 3.0, "bob", None), Refusal.DISABLED),
        (lambda: cond.unshelve(off, 3.0, "bob"), Refusal.DISABLED),
        (lambda: cond.enable(s, 3.0, "bob"), Refusal.ALREADY_ENABLED),
    ):
        with pytest.raises(AlarmRefused) as refused:
            refused_call()
        assert refused.value.refusal is refusal
    on = cond.enable(off, 4.0, "bob")
    assert (on.enabled, on.active, on.acked, on.retain) == (True, True, False, True)


async def test_a_disabled_alarm_is_judged_silently_and_stays_disabled_over_a_restart(tmp_path) -> None:
    mapping = load_mapping(AC_LINE)
    hub, journal = EventHub(), SqliteJournal(tmp_path / "journal.sqlite")
    book = AlarmBook(mapping, hub, journal, lambda station: None)
    seen = hub.subscribe("test", AlarmChanged)
    await book.start()
    try:
        book.disable("coil.furnace_temp_c", "ann")
        assert (await asyncio.wait_for(seen.get(), 5)).what == "disabled"
        hub.publish(scan("coil", furnace_temp_c=650.0))  # above its high limit: judged, told nobody
        hub.publish(scan("coil", online=False))  # a change of another alarm is news as before
        change = await asyncio.wait_for(seen.get(), 5)
        assert (change.alarm.alarm_id, change.what) == ("coil.offline", "activated")
        assert book.get("coil.furnace_temp_c").active
        assert "coil.furnace_temp_c" not in [s.alarm_id for s in book.retained()]
    finally:
        await book.stop()
    assert [r["what"] for r in journal.load_alarms("coil.furnace_temp_c")] == ["disabled"]
    journal.close()

    again = AlarmBook(mapping, EventHub(), SqliteJournal(tmp_path / "journal.sqlite"), lambda s: None)
    await again.start()
    try:
        assert not again.get("coil.furnace_temp_c").enabled  # a restart keeps it disabled
        assert again.enable("coil.furnace_temp_c", "bob").enabled
    finally:
        await again.stop()
        again.journal.close()  # type: ignore[attr-defined]
