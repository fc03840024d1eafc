"""The RetinaNet workload over 2 gloo processes (DistributedDataParallel on the CPU): each trains
its half of every global batch; after an epoch both hold the same weights (and, for the
evaluation, rank 0's batch-norm statistics), and the evaluation
(detections gathered from both, scored once) is the same on both and equals the mAP of one
process scoring every validation image with those weights."""
from __future__ import annotations

import os

import pytest
import torch
from gloo_ranks import run_ranks
from test_retinanet_workload import TINY, TinyRetinaNet

from mlperf_fast.harness.workload import RunContext


def _worker(rank, cache):
    os.environ["MLPERF_FAST_CACHE"] = cache
    w = TinyRetinaNet(TINY, RunContext(seed=5, device=torch.device("cpu"), rank=rank,
                                       world_size=2))
    w.build()
    w.train(0, 1)
    score = w.evaluate()["mAP"]  # with rank 0's batch-norm statistics on both ranks
    return {"state": {k: v.detach().clone() for k, v in w.model.state_dict().items()},
            "mAP": score, "applied": w.trainer.applied}


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights_and_scores(tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    a, b = run_ranks(_worker, cache, timeout=300)
    assert a["applied"] == b["applied"] == 3  # 24 images, 8 per global step
    for name, value in a["state"].items():
        assert torch.equal(value, b["state"][name]), name
    assert a["mAP"] == b["mAP"]
    monkeypatch.setenv("MLPERF_FAST_CACHE", cache)
    one = TinyRetinaNet(TINY, RunContext(seed=5, device=torch.device("cpu")))
    one.build()
    one.model.load_state_dict(a["state"])
    assert one.evaluate()["mAP"] == pytest.approx(a["mAP"], abs=1e-12)
