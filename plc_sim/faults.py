"""Fault injection for a simulated PLC, and its "simulator control" registers.

The same settings are reachable three ways: `plc-sim --fault`, the Python API (`SimulatedPlc.faults`)
and at run time through holding registers at `control_address` (docs/plc_sim.md):

    +0  reject_next      result code for the next step (0 = none); cleared once used
    +1  fault_permille   share of steps that end with code 4 (station_fault), 0..1000
    +2  stall            1 = running steps never finish until set back to 0
    +3  drop_next        close the TCP connections instead of answering the next N requests
    +4  exception_code   answer every request with this Modbus exception (0 = off)
    +5  delay_ms         answer every request this late
    +6  corrupt_next     1 = the next parameter read-back shows a corrupted first parameter word
    +7  clamp_setpoints  1 = setpoint writes land altered (first word's low bit flipped, a bit inverted),
                         as on a PLC whose program overrides a setting, until set back to 0

Handshake faults: a PLC program that gets the handshake wrong in one way each, for `linebridge plc
check` (docs/plc-guide.md) to find. 1 = on:

    +8  no_echo          the status never shows a step's sequence number (accepted/done/acked stay 0)
    +9  done_early       results land 0.2 s after the status shows done (cleared at each start)
    +10 repeat_start     a start_seq written again is run again, even when it is the step just run
    +11 self_ack         a finished step goes idle by itself, without waiting for ack_seq
    +12 accept_any       parameters are not range-checked: an out-of-range set runs with result 0
    +13 forget_on_disconnect  the status block is cleared whenever a client's connection closes
    +14 ignore_heartbeat the bridge's heartbeat is not watched: starts are taken with the bridge gone
"""

from __future__ import annotations

from dataclasses import dataclass, fields

CONTROL_REGISTERS = 15
DEFAULT_CONTROL_ADDRESS = 9000


@dataclass
class Faults:
    reject_next: int = 0
    fault_permille: int = 0
    stall: int = 0
    drop_next: int = 0
    exception_code: int = 0
    delay_ms: int = 0
    corrupt_next: int = 0
    clamp_setpoints: int = 0
    no_echo: int = 0
    done_early: int = 0
    repeat_start: int = 0
    self_ack: int = 0
    accept_any: int = 0
    forget_on_disconnect: int = 0
    ignore_heartbeat: int = 0

    def to_registers(self) -> list[int]:
        return [getattr(self, f.name) & 0xFFFF for f in fields(self)]

    def set_register(self, offset: int, value: int) -> None:
        setattr(self, fields(self)[offset].name, value)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def parse_fault(spec: str) -> tuple[str, str, int]:
    """`station:name=value` (or `station:name` for 1) as given to `plc-sim --fault`.

    `*` as station means every station. Fractions are given in permille for fault_permille,
    or as `fault_fraction=0.1` for convenience.
    """
    station, sep, setting = spec.partition(":")
    if not sep or not station:
        raise ValueError(f"{spec!r}: expected station:name=value, e.g. coil:reject_next=2")
    name, _, raw = setting.partition("=")
    raw = raw or "1"
    if name == "fault_fraction":
        name, value = "fault_permille", round(float(raw) * 1000)
    else:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{spec!r}: {raw!r} is not a whole number") from None
    if name not in Faults.names():
        raise ValueError(f"{spec!r}: unknown fault {name!r} (known: {', '.join(Faults.names())})")
    if not 0 <= value <= 65535:
        raise ValueError(f"{spec!r}: value must be 0..65535")
    return station, name, value
