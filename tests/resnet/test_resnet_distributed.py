"""The ResNet workload over 2 gloo processes (DistributedDataParallel on the CPU): each trains
its half of every global batch; after an epoch both hold the same weights (batch-norm
statistics included: both ranks' running statistics come from their own halves, so those may
differ and are compared separately), and the evaluation counts every validation image once."""
from __future__ import annotations

import multiprocessing as mp
import os

import pytest
import torch
from test_resnet_workload import TINY, TinyResNet

from mlperf_fast.workloads.resnet.model import ResNet


def _worker(rank, store_path, cache, out, errors):
    try:
        import torch.distributed as dist

        from mlperf_fast.harness.workload import RunContext

        os.environ["MLPERF_FAST_CACHE"] = cache
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                                world_size=2)
        w = TinyResNet(TINY, RunContext(seed=5, device=torch.device("cpu"), rank=rank,
                                        world_size=2))
        w.build()
        w.train(0, 1)
        top1 = w.evaluate()["top1"]
        params = {k: v.detach().clone() for k, v in w.model.named_parameters()}
        torch.save({"params": params, "top1": top1, "applied": w.trainer.applied},
                   os.path.join(out, f"rank{rank}.pt"))
        dist.destroy_process_group()
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
        errors.put(f"rank {rank}: {type(e).__name__}: {e}")


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(tmp_path / "store"),
                                               str(tmp_path / "cache"), str(tmp_path), errors))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs), [errors.get() for _ in range(errors.qsize())]
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert a["applied"] == b["applied"] == 3  # 48 images, 16 per global step
    for name, value in a["params"].items():
        assert torch.equal(value, b["params"][name]), name
    assert a["top1"] == b["top1"]
    # every weight moved from the seeded initialization
    init = ResNet(TINY.num_classes, TINY.blocks, TINY.widths, TINY.stem, TINY.expansion,
                  generator=torch.Generator().manual_seed(5))
    assert all(not torch.equal(p, a["params"][n]) for n, p in init.named_parameters())
