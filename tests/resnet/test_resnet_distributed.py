"""The ResNet workload over 2 gloo processes (DistributedDataParallel on the CPU): each trains
its half of every global batch; after an epoch both hold the same weights and the same
evaluation (every validation image counted once over the two)."""
from __future__ import annotations

import os

import pytest
import torch
from gloo_ranks import run_ranks
from test_resnet_workload import TINY, TinyResNet

from mlperf_fast.harness.workload import RunContext
from mlperf_fast.workloads.resnet.model import ResNet


def _worker(rank, cache):
    os.environ["MLPERF_FAST_CACHE"] = cache
    w = TinyResNet(TINY, RunContext(seed=5, device=torch.device("cpu"), rank=rank, world_size=2))
    w.build()
    w.train(0, 1)
    return {"params": {k: v.detach().clone() for k, v in w.model.named_parameters()},
            "top1": w.evaluate()["top1"], "applied": w.trainer.applied}


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    a, b = run_ranks(_worker, str(tmp_path / "cache"), timeout=300)
    assert a["applied"] == b["applied"] == 3  # 48 images, 16 per global step
    for name, value in a["params"].items():
        assert torch.equal(value, b["params"][name]), name
    assert a["top1"] == b["top1"]
    # every weight moved from the seeded initialization
    init = ResNet(TINY.num_classes, TINY.blocks, TINY.widths, TINY.stem, TINY.expansion,
                  generator=torch.Generator().manual_seed(5))
    assert all(not torch.equal(p, a["params"][n]) for n, p in init.named_parameters())
