"""Table-wise sharded DLRM over 2 gloo processes against one process training the same global
batch from the same weights: the tables (each on its owner) and the MLPs equal after 3 steps."""
import os

import torch
import torch.nn.functional as F
from gloo_ranks import run_ranks

from mlperf_fast.workloads.dlrm.sharded import assign_tables

SIZES = [7, 50, 3, 200, 11, 1, 90, 40]
DIM, B, STEPS, LR = 4, 16, 3, 0.7


def _data(step):
    g = torch.Generator().manual_seed(100 + step)
    dense = torch.rand(2 * B, 13, generator=g, dtype=torch.float64)
    sparse = torch.stack([torch.randint(0, n, (2 * B,), generator=g) for n in SIZES], 1)
    labels = (torch.rand(2 * B, generator=g) < 0.4).double()
    return dense, sparse, labels


def _worker(rank):
    from mlperf_fast.workloads.dlrm.model import DLRM
    from mlperf_fast.workloads.dlrm.sharded import ShardedDLRM

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)
    full = DLRM(SIZES, DIM, [8, DIM], [8, 1], lr=LR, dtype=torch.float64, generator=gen)
    sharded = ShardedDLRM(SIZES, DIM, [8, DIM], [8, 1], plan="table", lr=LR,
                          dtype=torch.float64)
    sharded.load_from(full)
    initial = {t: v.clone() for t, v in sharded.sharded.local_tables().items()}
    assert initial, "each process owns tables"
    opt_full = torch.optim.SGD(full.dense_parameters(), lr=LR)
    opt = torch.optim.SGD(sharded.dense_parameters(), lr=LR)
    for step in range(STEPS):
        dense, sparse, labels = _data(step)
        opt_full.zero_grad()
        F.binary_cross_entropy_with_logits(full(dense, sparse), labels).backward()
        opt_full.step()
        mine = slice(rank * B, (rank + 1) * B)
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(sharded(dense[mine], sparse[mine]),
                                           labels[mine]).backward()
        sharded.average_dense_gradients()
        opt.step()
    tables = full.embedding.split_embedding_weights()
    for t, view in sharded.sharded.local_tables().items():
        torch.testing.assert_close(view, tables[t], rtol=1e-12, atol=1e-12)
        assert not torch.equal(view, initial[t]), f"table {t} was never updated"
    for a, b in zip(sharded.dense_parameters(), full.dense_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_assign_tables_balances_rows():
    owner = assign_tables(SIZES, 2)
    load = [sum(n for n, o in zip(SIZES, owner) if o == r) for r in (0, 1)]
    assert sorted(set(owner)) == [0, 1] and max(load) <= 200 + 11
    assert assign_tables([5, 5, 5], 3) == [0, 1, 2]


def test_two_process_gloo_run_equals_one_process():
    run_ranks(_worker)


def _workload_worker(rank, cache):
    os.environ["MLPERF_FAST_CACHE"] = cache
    from test_dlrm_workload import TINY

    from mlperf_fast.harness.workload import RunContext
    from mlperf_fast.workloads.dlrm.workload import DLRMWorkload

    w = DLRMWorkload(TINY, RunContext(seed=3, device=torch.device("cpu"), rank=rank,
                                      world_size=2))
    w.build()
    w.train(0, 1.0)
    return rank, w.trainer.applied, w.evaluate()["AUC"], sorted(w.model.sharded.local_tables())


def test_two_process_workload_trains_and_agrees(tmp_path):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))  # test_dlrm_workload's TINY in the children
    got = sorted(run_ranks(_workload_worker, str(tmp_path / "cache"), timeout=300))
    (_, steps0, auc0, tables0), (_, steps1, auc1, tables1) = got
    assert steps0 == steps1 == 64  # 8192 rows // 128: every step on both processes
    assert auc0 == auc1 > 0.58  # one AUC over both processes' scores, and it learned
    assert sorted(tables0 + tables1) == list(range(26))
