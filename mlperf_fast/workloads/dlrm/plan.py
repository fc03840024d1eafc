"""Where DLRM's embedding tables live over ``world`` processes: each table either whole on one
process (table-wise) or split into contiguous row ranges, one per process (row-wise).

Whole tables are placed by the longest-processing-time greedy: largest first, each to the
process holding the fewest rows so far (row-wise ranges counted), ties to the lowest rank.

The rule ("auto") splits tables by rows, the largest whole one first, one at a time, while that
greedy leaves some process more than ``tolerance`` (5%) above the average rows per process; only
tables of at least ``world`` rows are split. Balance is what a split buys (rows are memory:
Criteo's 40M-row tables are 20 GB each at dimension 128 in float32); communication is what it
costs: a row-wise table moves ``world`` times the pooled vectors of a whole one (every process
sends its partial sums of every sample), so tables are split only as far as the balance needs.
On Criteo 1TB's 26 tables the most-loaded process holds, over the average: on 8 processes 1.70x
with every table whole, 1.02x with the six largest split; on 4, 1.37x and 1.04x (five split); on
2, 1.11x and 1.05x (one split). (Splitting only the tables above the average, the simpler rule,
leaves 1.37x on 4 processes: five 25M-40M tables, none above the average of 47M, cannot be
placed whole on four.)

"table" is the greedy alone (every table whole: the placement before row-wise sharding existed);
"row" splits every table; an explicit plan names each table's owner rank, or ``"row"``.

A plan is a pure function of (table sizes, world, mode): every process computes the same one
without communicating (``ShardedEmbedding`` still checks that they agree before any exchange).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

#: The entry of a row-wise table in an explicit plan.
ROW = "row"
MODES = ("auto", "table", "row")
#: "auto" splits tables until no process holds more than this fraction above the average rows.
BALANCE_TOLERANCE = 0.05

PlanSpec = str | Sequence[int | str]


@dataclass(frozen=True)
class ShardingPlan:
    """``owner[t]``: the rank holding table ``t`` whole, or None where it is split by rows
    (process ``r`` then holds rows ``[r * n // world, (r + 1) * n // world)`` of its ``n``:
    contiguous ranges, in rank order, that differ by at most one row). Built by ``make_plan``;
    checked on construction (every process holds some rows)."""

    table_sizes: tuple[int, ...]
    world: int
    owner: tuple[int | None, ...]

    def __post_init__(self) -> None:
        _check_world(self.world)
        # stored as tuples, so that plans compare (and hash) by value
        object.__setattr__(self, "table_sizes", _check_sizes(self.table_sizes))
        object.__setattr__(self, "owner", tuple(
            o if o is None or _integer(o) is None else _integer(o) for o in self.owner))
        if len(self.owner) != len(self.table_sizes):
            raise ValueError(f"the plan has {len(self.owner)} entries for "
                             f"{len(self.table_sizes)} tables")
        for t, (o, n) in enumerate(zip(self.owner, self.table_sizes)):
            if o is None:
                if n < self.world:
                    raise ValueError(
                        f"table {t} has {n} rows, fewer than the {self.world} processes: it cannot "
                        "be split by rows (each process must hold at least one); keep it whole (sharding "
                        "'auto', or an explicit plan)")
            elif _integer(o) is None or not 0 <= o < self.world:
                raise ValueError(f"table {t}: owner must be a rank in [0, {self.world}), got {o!r}")
        idle = [r for r, rows in enumerate(self.loads()) if rows == 0]
        if idle:
            raise ValueError(
                f"processes {idle} would hold no rows: {len(self.table_sizes)} whole tables "
                f"cannot occupy {self.world} processes; split a table by rows or use fewer "
                "processes")

    @property
    def rowwise(self) -> list[int]:
        """The row-wise tables, in table order."""
        return [t for t, o in enumerate(self.owner) if o is None]

    def tables_of(self, rank: int) -> list[int]:
        """The tables ``rank`` holds whole, in table order."""
        return [t for t, o in enumerate(self.owner) if o == rank]

    def row_range(self, t: int, rank: int) -> tuple[int, int]:
        """``(lo, hi)``: the rows of table ``t`` that ``rank`` holds (``(0, 0)``: none)."""
        n = self.table_sizes[t]
        if self.owner[t] is None:
            return rank * n // self.world, (rank + 1) * n // self.world
        return (0, n) if self.owner[t] == rank else (0, 0)

    def loads(self) -> list[int]:
        """The rows each process holds, over every table."""
        return _loads(self.table_sizes, self.world, self.owner)

    def describe(self) -> str:
        """One line for logs: the row-wise tables and the rows on each process."""
        return (f"row-wise tables {self.rowwise}; rows per process "
                f"[{', '.join(f'{n:,}' for n in self.loads())}]")


def make_plan(table_sizes: Sequence[int], world: int, mode: PlanSpec | ShardingPlan = "auto",
              *, tolerance: float = BALANCE_TOLERANCE) -> ShardingPlan:
    """The plan of ``table_sizes`` over ``world`` processes. ``mode``: "auto" (the rule above,
    with ``tolerance``), "table", "row", an explicit list (per table an owner rank or ``"row"``),
    or a ShardingPlan (checked against the sizes and world). Raises ValueError or TypeError
    naming what is wrong."""
    _check_world(world)
    sizes = _check_sizes(table_sizes)
    if isinstance(mode, ShardingPlan):
        if mode.table_sizes != sizes or mode.world != world:
            raise ValueError(f"the plan is for {len(mode.table_sizes)} tables over {mode.world} "
                             f"processes, not these {len(sizes)} tables over {world}")
        return mode
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"sharding mode must be one of {MODES} or a list of owners, got "
                             f"{mode!r}")
        if mode == "auto":
            return ShardingPlan(sizes, world, _auto(sizes, world, tolerance))
        return ShardingPlan(sizes, world, _greedy(sizes, world, [mode == "row"] * len(sizes)))
    if not isinstance(mode, Sequence):
        raise TypeError(f"sharding mode must be a string, a list of owners or a ShardingPlan, "
                        f"got {type(mode).__name__}")
    owner: list[int | None] = []
    for t, o in enumerate(mode):
        if isinstance(o, str) and o == ROW:
            owner.append(None)
        elif _integer(o) is not None:
            owner.append(_integer(o))
        else:
            raise ValueError(f"table {t}: an explicit plan names an owner rank or {ROW!r}, got "
                             f"{o!r}")
    return ShardingPlan(sizes, world, tuple(owner))


def assign_tables(table_sizes: Sequence[int], world: int) -> list[int]:
    """The owner of each table when all are whole: the largest tables first, each to the
    least-loaded process (by rows), ties to the lowest rank."""
    _check_world(world)
    sizes = _check_sizes(table_sizes)
    return [int(o) for o in _greedy(sizes, world, [False] * len(sizes))]  # type: ignore[arg-type]


def _auto(sizes: tuple[int, ...], world: int, tolerance: float) -> tuple[int | None, ...]:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or \
            not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    split = [False] * len(sizes)
    while True:
        owner = _greedy(sizes, world, split)
        whole = [t for t in range(len(sizes)) if not split[t] and sizes[t] >= world]
        # max / mean <= 1 + tolerance, without the division
        if not whole or max(_loads(sizes, world, owner)) * world <= (1 + tolerance) * sum(sizes):
            return owner
        split[max(whole, key=lambda t: (sizes[t], -t))] = True  # the largest, lowest number


def _greedy(sizes: tuple[int, ...], world: int, split: list[bool]) -> tuple[int | None, ...]:
    """Row-wise (None) where ``split``; the rest whole by the greedy, starting from the rows
    the row-wise ranges already put on each process."""
    owner: list[int | None] = [None] * len(sizes)
    load = _loads(sizes, world, [None if s else -1 for s in split])
    for t in sorted((t for t in range(len(sizes)) if not split[t]), key=lambda t: (-sizes[t], t)):
        o = min(range(world), key=lambda r: (load[r], r))
        owner[t] = o
        load[o] += sizes[t]
    return tuple(owner)


def _loads(sizes: Sequence[int], world: int, owner: Sequence[int | None]) -> list[int]:
    """Rows on each process: a row-wise table's (None) range on every one, a whole table's rows
    on its owner (an owner outside ``[0, world)`` counts nowhere)."""
    load = [0] * world
    for n, o in zip(sizes, owner):
        if o is None:
            for r in range(world):
                load[r] += (r + 1) * n // world - r * n // world
        elif 0 <= o < world:
            load[o] += n
    return load


def _integer(value: object) -> int | None:
    """``value`` as an int if it is an integer (a NumPy one included) and not a bool."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_world(world: int) -> None:
    if _integer(world) is None or world < 1:
        raise ValueError(f"world must be an integer >= 1, got {world!r}")


def _check_sizes(table_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(table_sizes)
    if not sizes:
        raise ValueError("at least one table is needed")
    out = []
    for t, n in enumerate(sizes):
        i = _integer(n)
        if i is None or i < 1:
            raise ValueError(f"table {t}: rows must be an integer >= 1, got {n!r}")
        out.append(i)
    return tuple(out)
