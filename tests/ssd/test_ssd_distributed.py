"""The SSD workload over 2 gloo processes (DistributedDataParallel on the CPU), through the
harness as torchrun would start it: each process trains its half of every global batch; after
each epoch both hold the same weights and batch-norm statistics (rank 0's), and the evaluation
(each process detects its half of the validation images with them, rank 0 scores the gathered
detections and sends the score) gives both the same mAP, which is the mAP of one process scoring
every image with those weights. Rank 0's MLPerf log passes the v1.0 compliance checker."""
from __future__ import annotations

import os
from typing import ClassVar

import pytest
import torch
from gloo_ranks import run_ranks
from test_ssd_workload import TINY, TinySSD

from mlperf_fast.harness import RunOptions, run_workload
from mlperf_fast.harness.workload import RunContext


class RecordedSSD(TinySSD):
    """Keeps, at each evaluation, this process's weights and score."""

    evaluations: ClassVar[list[dict]] = []

    def evaluate(self) -> dict[str, float]:
        result = super().evaluate()
        RecordedSSD.evaluations.append({
            "state": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "mAP": result["mAP"], "applied": self.trainer.applied})
        return result


def _worker(rank: int, cache: str, out: str) -> dict:
    # the process group exists (gloo_ranks made it); these make the harness join it
    os.environ.update(MLPERF_FAST_CACHE=cache, RANK=str(rank), WORLD_SIZE="2")
    summary = run_workload(RecordedSSD, RunOptions(config="tiny", output_dir=out, device="cpu",
                                                   echo_log=False, progress=False))
    return {"summary": summary, "evaluations": RecordedSSD.evaluations}


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights_scores_and_a_compliant_log(tmp_path,
                                                                          monkeypatch):
    cache, out = str(tmp_path / "cache"), str(tmp_path / "out")
    a, b = run_ranks(_worker, cache, out, timeout=300)
    assert b["summary"] is None  # only rank 0 reports
    (run,) = a["summary"]["runs"]
    assert run["world_size"] == 2 and run["status"] == "not converged"  # target 0.99
    assert run["compliance"]["passed"], run["compliance"]["messages"]
    assert run["compliance"]["ruleset"] == "training 1.0.0"
    assert run["hyperparameters"]["model_bn_span"] == 4  # 8 images over 2 processes
    assert len(a["evaluations"]) == len(b["evaluations"]) == 2  # one per epoch
    for ea, eb, logged in zip(a["evaluations"], b["evaluations"], run["history"]):
        for name, value in ea["state"].items():
            assert torch.equal(value, eb["state"][name]), name
        assert ea["mAP"] == eb["mAP"] == logged["quality"]["mAP"]
    assert a["evaluations"][-1]["applied"] == b["evaluations"][-1]["applied"] == 2 * 3
    # one process, the same weights, every validation image: the same score
    monkeypatch.setenv("MLPERF_FAST_CACHE", cache)
    one = TinySSD(TINY, RunContext(seed=TINY.seed, device=torch.device("cpu")))
    one.build()
    one.model.load_state_dict(a["evaluations"][-1]["state"])
    assert one.evaluate()["mAP"] == pytest.approx(a["evaluations"][-1]["mAP"], abs=1e-12)
    log = (tmp_path / "out" / "run_0" / "mlperf.log").read_text()
    assert log.count('"key": "eval_accuracy"') == 2
