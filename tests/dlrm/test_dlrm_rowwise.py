"""Row-wise (and mixed) sharded DLRM tables: the plan's rule (balance, determinism, forced modes,
errors), the block-seeded initialisation, and over 2 gloo processes the mixed plans against one
process training the same global batch from the same weights: the pooled vectors bit for bit,
the tables (each process's rows) and the MLPs to 1e-12 in float64 after 3 SGD steps, ids at the
row-range boundaries included; then the workload trained with every table split equals, bit for
bit, the workload trained with every table whole."""
import os
import random

import pytest
import torch
import torch.nn.functional as F
from gloo_ranks import run_ranks

from mlperf_fast.workloads.dlrm.config import CRITEO_1TB_TABLE_SIZES, EMBEDDED
from mlperf_fast.workloads.dlrm.plan import ROW, ShardingPlan, assign_tables, make_plan
from mlperf_fast.workloads.dlrm.reference import init_table_
from mlperf_fast.workloads.dlrm.sharded import init_rows_

# "auto" over 2 splits table 1 (500 of 705 rows); table 4 has exactly one row per process
SIZES = [7, 500, 3, 61, 2, 1, 90, 41]
PLANS = {
    "auto": (SIZES, "auto"),
    "explicit": (SIZES, [0, ROW, 1, ROW, ROW, 1, 0, ROW]),  # odd and minimal row counts
    "row": ([n for n in SIZES if n > 1], "row"),  # no process holds a whole table
}
DIM, B, STEPS, LR = 4, 16, 3, 0.7


# -- the plan --------------------------------------------------------------------------------
def _balanced(plan, tolerance=0.05):
    return max(plan.loads()) * plan.world <= (1 + tolerance) * sum(plan.table_sizes)


def test_auto_splits_the_largest_tables_until_balanced():
    for world, split in ((2, [19]), (4, [0, 9, 19, 20, 21]), (8, [0, 9, 10, 19, 20, 21])):
        plan = make_plan(CRITEO_1TB_TABLE_SIZES, world)
        assert plan.rowwise == split and _balanced(plan)
        assert not _balanced(make_plan(CRITEO_1TB_TABLE_SIZES, world, "table"))
    assert make_plan(SIZES, 2).rowwise == [1]
    # already balanced whole: nothing is split (the table-wise tests' sets stay table-wise)
    assert make_plan([7, 50, 3, 200, 11, 1, 90, 40], 2).rowwise == []
    assert make_plan(EMBEDDED.table_sizes, 2).rowwise == []


def test_plans_of_random_tables_are_balanced_and_deterministic():
    rng = random.Random(0)
    for _ in range(300):
        sizes = [rng.choice([1, 3, 40, 1000, 50_000]) * rng.randint(1, 9)
                 for _ in range(rng.randint(1, 12))]
        world = rng.randint(1, 9)
        for mode in ("auto", "table"):
            try:
                plan = make_plan(sizes, world, mode)
            except ValueError as e:  # only when whole tables cannot occupy every process
                assert "would hold no rows" in str(e) and len(sizes) < world
                continue
            assert plan == make_plan(list(sizes), world, mode)  # the same on every process
            loads = plan.loads()
            assert sum(loads) == sum(sizes) and min(loads) > 0
            whole = [n for n, o in zip(sizes, plan.owner) if o is not None]
            # the greedy's bound: at most the largest whole table (or a row per row-wise
            # table) between the most- and the least-loaded process
            assert max(loads) - min(loads) <= max(whole + [len(plan.rowwise)])
            if mode == "auto" and not _balanced(plan):  # stopped: nothing left to split
                assert all(n < world for n in whole)


def test_forced_modes_and_row_ranges():
    assert make_plan(SIZES, 3, "table").owner == tuple(assign_tables(SIZES, 3))
    assert assign_tables([5, 5, 5], 3) == [0, 1, 2]
    plan = make_plan([7, 3, 10], 3, "row")
    assert plan.rowwise == [0, 1, 2] and all(plan.tables_of(r) == [] for r in range(3))
    assert [plan.row_range(0, r) for r in range(3)] == [(0, 2), (2, 4), (4, 7)]
    assert [plan.row_range(1, r) for r in range(3)] == [(0, 1), (1, 2), (2, 3)]
    assert plan.loads() == [6, 6, 8]
    explicit = make_plan(SIZES, 2, PLANS["explicit"][1])
    assert explicit.rowwise == [1, 3, 4, 7] and explicit.tables_of(1) == [2, 5]
    assert explicit.row_range(2, 0) == (0, 0) and explicit.row_range(2, 1) == (0, 3)
    assert make_plan(SIZES, 2, explicit) is explicit


@pytest.mark.parametrize("sizes, world, mode, error", [
    ([7, 1], 2, "row", "table 1 has 1 rows, fewer than the 2 processes"),
    ([7, 5], 8, [0, ROW], "table 1 has 5 rows, fewer than the 8 processes"),
    ([7, 5], 2, [0, 0], r"processes \[1\] would hold no rows"),
    ([3, 3], 8, "auto", r"processes \[2, 3, 4, 5, 6, 7\] would hold no rows"),
    ([7, 5], 2, [0], "the plan has 1 entries for 2 tables"),
    ([7, 5], 2, [0, 2], r"table 1: owner must be a rank in \[0, 2\), got 2"),
    ([7, 5], 2, [0, "rows"], "table 1: an explicit plan names an owner rank or 'row'"),
    ([7, 5], 2, [True, 1], "table 0: an explicit plan names an owner rank"),
    ([7, 5], 2, "rows", "sharding mode must be one of"),
    ([7, 5], 0, "auto", "world must be an integer >= 1"),
    ([], 2, "auto", "at least one table"),
    ([7, 0], 2, "auto", "table 1: rows must be an integer >= 1"),
    ([7, 2.5], 2, "auto", "table 1: rows must be an integer >= 1"),
])
def test_plan_errors(sizes, world, mode, error):
    with pytest.raises(ValueError, match=error):
        make_plan(sizes, world, mode)


def test_plan_errors_of_other_kinds():
    with pytest.raises(TypeError, match="a string, a list of owners or a ShardingPlan"):
        make_plan([7, 5], 2, 5)
    with pytest.raises(ValueError, match="tolerance must be a finite number"):
        make_plan([7, 5], 2, tolerance=-0.1)
    with pytest.raises(ValueError, match="the plan is for 2 tables over 2 processes"):
        make_plan([7, 5, 3], 2, make_plan([7, 5], 2))
    with pytest.raises(ValueError, match="owner must be a rank"):
        ShardingPlan((7, 5), 2, (0, -1))
    with pytest.raises(ValueError, match="sharding must be one of"):
        EMBEDDED.replace(sharding="rows")


# -- the initialisation ----------------------------------------------------------------------
def test_rows_start_the_same_however_the_table_is_split():
    n, dim, seed, t = 10, 3, 4, 2
    whole = torch.empty(n, dim, dtype=torch.float64)
    init_rows_(whole, t, n, 0, seed, block_rows=4)
    pieces = torch.cat([_rows(lo, hi, n, dim, seed, t) for lo, hi in ((0, 3), (3, 7), (7, 10))])
    assert torch.equal(pieces, whole)
    bound = (1.0 / n) ** 0.5
    assert whole.abs().max() <= bound and len(whole.unique()) == n * dim  # one draw per value
    # a table within one block starts as the table-wise code always drew it
    before = torch.empty(n, dim, dtype=torch.float64)
    init_table_(before, torch.Generator().manual_seed(seed * 1000 + t))
    now = torch.empty(n, dim, dtype=torch.float64)
    init_rows_(now, t, n, 0, seed)
    assert torch.equal(now, before)
    with pytest.raises(ValueError, match=r"rows \[8, 11\) are not within the table's 10"):
        init_rows_(torch.empty(3, dim), t, n, 8, seed)


def _rows(lo, hi, n, dim, seed, t):
    view = torch.empty(hi - lo, dim, dtype=torch.float64)
    init_rows_(view, t, n, lo, seed, block_rows=4)
    return view


# -- two processes against one ---------------------------------------------------------------
def _data(sizes, step):
    """A global batch of 2 * B samples whose first four samples of each slice look up each
    table's first row, last row and the rows on either side of the two ranges' boundary (rank
    0's slice in one order, rank 1's in the other: the same rows from both processes)."""
    g = torch.Generator().manual_seed(100 + step)
    dense = torch.rand(2 * B, 13, generator=g, dtype=torch.float64)
    sparse = torch.stack([torch.randint(0, n, (2 * B,), generator=g) for n in sizes], 1)
    for t, n in enumerate(sizes):
        edges = torch.tensor([0, max(n // 2 - 1, 0), n // 2, n - 1])
        sparse[:4, t], sparse[B:B + 4, t] = edges, edges.flip(0)
    labels = (torch.rand(2 * B, generator=g) < 0.4).double()
    return dense, sparse, labels


def _parity_worker(rank):
    import torch.distributed as dist

    from mlperf_fast.workloads.dlrm.model import DLRM
    from mlperf_fast.workloads.dlrm.sharded import ShardedDLRM, ShardedEmbedding

    mine = slice(rank * B, (rank + 1) * B)
    plans = {}
    for name, (sizes, spec) in PLANS.items():
        gen = torch.Generator().manual_seed(7)
        full = DLRM(sizes, DIM, [8, DIM], [8, 1], lr=LR, dtype=torch.float64, generator=gen)
        sharded = ShardedDLRM(sizes, DIM, [8, DIM], [8, 1], plan=spec, lr=LR,
                              dtype=torch.float64)
        sharded.load_from(full)
        tables = sharded.sharded
        plans[name] = (tables.plan, {t: tables.row_range(t) for t in tables.local_tables()})
        initial = {t: v.clone() for t, v in tables.local_tables().items()}
        with torch.no_grad():  # each sample's vector from exactly one process: bit for bit
            _, sparse, _ = _data(sizes, 0)
            assert torch.equal(sharded.embed(sparse[mine]), full.embed(sparse)[mine]), name
        opt_full = torch.optim.SGD(full.dense_parameters(), lr=LR)
        opt = torch.optim.SGD(sharded.dense_parameters(), lr=LR)
        for step in range(STEPS):
            dense, sparse, labels = _data(sizes, step)
            opt_full.zero_grad()
            F.binary_cross_entropy_with_logits(full(dense, sparse), labels).backward()
            opt_full.step()
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(sharded(dense[mine], sparse[mine]),
                                               labels[mine]).backward()
            sharded.average_dense_gradients()
            opt.step()
        want = full.embedding.split_embedding_weights()
        for t, view in tables.local_tables().items():
            lo, hi = tables.row_range(t)
            torch.testing.assert_close(view, want[t][lo:hi], rtol=1e-12, atol=1e-12,
                                       msg=lambda m, t=t, name=name: f"{name}, table {t}: {m}")
            # both rows at this process's edges were looked up, and moved
            assert not torch.equal(view[0], initial[t][0]), (name, t)
            assert not torch.equal(view[-1], initial[t][-1]), (name, t)
        for a, b in zip(sharded.dense_parameters(), full.dense_parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # an id outside a row-wise table fails on every process alike (none is left waiting)
    ids = torch.zeros(B, len(SIZES), dtype=torch.int64)
    if rank == 0:
        ids[3, 1] = 500  # table 1 is row-wise under "auto"
    embedding = ShardedEmbedding(SIZES, DIM, dtype=torch.float64)
    with pytest.raises(ValueError, match="table 1: id 500 of sample 3 of the global batch is "
                                         "outside its 500 rows"):
        embedding(ids)
    # processes given other table sizes fail together, before any exchange
    with pytest.raises(ValueError, match=r"processes \[1\] have other table sizes"):
        ShardedEmbedding([5 + rank, 8], DIM)
    dist.barrier()
    return plans


def test_two_process_mixed_plans_equal_one_process():
    ranks = run_ranks(_parity_worker)
    for name in PLANS:
        (plan0, held0), (plan1, held1) = ranks[0][name], ranks[1][name]
        assert plan0 == plan1  # every process computed the same plan
        assert plan0.rowwise, name
        for t, n in enumerate(plan0.table_sizes):  # every row held by exactly one process
            ranges = sorted(h[t] for h in (held0, held1) if t in h)
            if t in plan0.rowwise:
                assert ranges == [(0, n // 2), (n // 2, n)], (name, t)
            else:
                assert ranges == [(0, n)], (name, t)


def _workload_worker(rank, cache):
    os.environ["MLPERF_FAST_CACHE"] = cache
    from test_dlrm_workload import TINY

    from mlperf_fast.harness.workload import RunContext
    from mlperf_fast.workloads.dlrm.workload import DLRMWorkload

    out = {}
    for sharding in ("table", "row"):
        w = DLRMWorkload(TINY.replace(sharding=sharding),
                         RunContext(seed=3, device=torch.device("cpu"), rank=rank,
                                    world_size=2))
        w.build()
        w.train(0, 0.25)
        tables = w.model.sharded
        out[sharding] = ({t: (tables.row_range(t), v.clone())
                          for t, v in tables.local_tables().items()},
                         [p.detach().clone() for p in w.model.dense_parameters()],
                         w.trainer.applied, tables.plan.table_sizes)
    return out


def test_workload_row_wise_trains_as_table_wise(tmp_path):
    """The config's ``sharding`` reaches the model; the tables start the same under both plans
    (the block-seeded initialisation) and train the same: bit for bit, as each sample's vector
    and each row's update are computed from the same values in the same order."""
    ranks = run_ranks(_workload_worker, str(tmp_path / "cache"), timeout=300)
    full = {}
    for sharding in ("table", "row"):
        tables = {}
        for r in ranks:
            shards, _, applied, sizes = r[sharding]
            assert applied == 16  # 0.25 of 64 steps
            for t, ((lo, hi), view) in shards.items():
                tables.setdefault(t, torch.full((sizes[t], 4), float("nan")))[lo:hi] = view
        full[sharding] = tables
    assert sorted(full["row"]) == sorted(full["table"]) == list(range(26))
    for t in range(26):
        assert not full["row"][t].isnan().any(), t
        assert torch.equal(full["row"][t], full["table"][t]), t
    for r in ranks:
        for a, b in zip(r["row"][1], r["table"][1]):
            assert torch.equal(a, b)
