"""Coalescing fields into as few Modbus requests as the register layout allows (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.mapping.fields import RegisterField
from bridge.mapping.vocabulary import BIT_TABLES, READ_REGISTERS_MAX

# Protocol limits per request: registers read / written, bits read / written.
MAX_READ = {"holding": READ_REGISTERS_MAX, "input": READ_REGISTERS_MAX, "coil": 2000, "discrete_input": 2000}
MAX_WRITE = {"holding": 123, "coil": 1968}
READ_WRITE_MAX = 121  # holding registers function 23 may write in one request (it reads up to 125)


@dataclass
class Block:
    """A contiguous run of addresses in one table, and the fields it carries."""

    table: str
    start: int
    count: int
    fields: list[tuple[str, RegisterField]] = field(default_factory=list)

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES

    def slice_for(self, f: RegisterField, values: list[int] | list[bool]) -> list[int] | list[bool]:
        offset = f.address - self.start
        return values[offset : offset + f.register_count]


def plan_blocks(
    named_fields: Iterable[tuple[str, RegisterField]], *, max_gap: int = 0, write: bool = False
) -> list[Block]:
    """Group fields per table into contiguous blocks; `max_gap` unused addresses may be bridged
    (reads only: a write must never touch an address the mapping does not declare)."""
    limits = MAX_WRITE if write else MAX_READ
    gap = 0 if write else max_gap
    blocks: list[Block] = []
    ordered = sorted(named_fields, key=lambda nf: (nf[1].table, nf[1].address))
    for name, f in ordered:
        last = blocks[-1] if blocks else None
        end = f.address + f.register_count
        if (
            last is not None
            and last.table == f.table
            and f.address <= last.start + last.count + gap
            and end - last.start <= limits[f.table]
        ):
            last.count = max(last.count, end - last.start)
            last.fields.append((name, f))
        else:
            blocks.append(Block(f.table, f.address, f.register_count, [(name, f)]))
    return blocks
