"""Table-wise sharded DLRM over 2 gloo processes against one process training the same global
batch from the same weights: the tables (each on its owner) and the MLPs equal after 3 steps."""
import multiprocessing as mp
import os

import torch
import torch.nn.functional as F

from mlperf_fast.workloads.dlrm.sharded import assign_tables

SIZES = [7, 50, 3, 200, 11, 1, 90, 40]
DIM, B, STEPS, LR = 4, 16, 3, 0.7


def _data(step):
    g = torch.Generator().manual_seed(100 + step)
    dense = torch.rand(2 * B, 13, generator=g, dtype=torch.float64)
    sparse = torch.stack([torch.randint(0, n, (2 * B,), generator=g) for n in SIZES], 1)
    labels = (torch.rand(2 * B, generator=g) < 0.4).double()
    return dense, sparse, labels


def _worker(rank, store_path, errors):
    try:
        import torch.distributed as dist

        from mlperf_fast.workloads.dlrm.model import DLRM
        from mlperf_fast.workloads.dlrm.sharded import ShardedDLRM

        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                                world_size=2)
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(7)
        full = DLRM(SIZES, DIM, [8, DIM], [8, 1], lr=LR, dtype=torch.float64, generator=gen)
        sharded = ShardedDLRM(SIZES, DIM, [8, DIM], [8, 1], lr=LR, dtype=torch.float64)
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
        dist.destroy_process_group()
    except BaseException as e:  # reported to the parent, which fails the test
        errors.put(f"rank {rank}: {type(e).__name__}: {e}")
        raise


def test_assign_tables_balances_rows():
    owner = assign_tables(SIZES, 2)
    load = [sum(n for n, o in zip(SIZES, owner) if o == r) for r in (0, 1)]
    assert sorted(set(owner)) == [0, 1] and max(load) <= 200 + 11
    assert assign_tables([5, 5, 5], 3) == [0, 1, 2]


def _run_two(target, args, errors, timeout):
    """Both ranks of ``target(rank, *args)`` in spawned processes; fails on a hang (a timeout)
    or an error, with the ranks' messages."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=(r, *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    assert not alive, f"hung: {messages}"
    assert all(p.exitcode == 0 for p in procs), messages


def test_two_process_gloo_run_equals_one_process(tmp_path):
    errors = mp.get_context("spawn").Queue()
    _run_two(_worker, (str(tmp_path / "store"), errors), errors, 240)


def _workload_worker(rank, store_path, cache, errors, results):
    try:
        os.environ["MLPERF_FAST_CACHE"] = cache
        import torch.distributed as dist
        from test_dlrm_workload import TINY

        from mlperf_fast.harness.workload import RunContext
        from mlperf_fast.workloads.dlrm.workload import DLRMWorkload

        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                                world_size=2)
        w = DLRMWorkload(TINY, RunContext(seed=3, device=torch.device("cpu"), rank=rank,
                                          world_size=2))
        w.build()
        w.train(0, 1.0)
        results.put((rank, w.trainer.applied, w.evaluate()["AUC"],
                     sorted(w.model.sharded.local_tables())))
        dist.destroy_process_group()
    except BaseException as e:
        errors.put(f"rank {rank}: {type(e).__name__}: {e}")
        raise


def test_two_process_workload_trains_and_agrees(tmp_path):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))  # test_dlrm_workload's TINY in the children
    ctx = mp.get_context("spawn")
    errors, results = ctx.Queue(), ctx.Queue()
    _run_two(_workload_worker, (str(tmp_path / "store"), str(tmp_path / "cache"), errors,
                                results), errors, 300)
    got = sorted(results.get(timeout=10) for _ in range(2))
    (_, steps0, auc0, tables0), (_, steps1, auc1, tables1) = got
    assert steps0 == steps1 == 64  # 8192 rows // 128: every step on both processes
    assert auc0 == auc1 > 0.58  # one AUC over both processes' scores, and it learned
    assert sorted(tables0 + tables1) == list(range(26))
