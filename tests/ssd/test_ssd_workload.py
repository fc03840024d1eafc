"""The SSD workload: a short run of the embedded default through the command line (a fresh
cache: the data set generated, read back, trained on, evaluated) with a compliant log; an exact
resume; the closed configuration's MLPerf keys against the installed v1.0 closed_ssd.yaml and
the closed configurations' logged hyperparameters against the three v1.0 RCPs (whose file holds
the reference's arguments, converted to what the reference logs); data errors before any work."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mlperf_fast.harness.rcp import rcp_match
from mlperf_fast.harness.workload import DataError, Metric, RunContext, Schedule
from mlperf_fast.optim.schedules import ssd_warmup_multistep
from mlperf_fast.workloads.ssd.config import (
    CLOSED,
    COCO_TRAIN_NONEMPTY,
    COCO_VAL,
    EMBEDDED,
    RCPS,
    rcp_config,
)
from mlperf_fast.workloads.ssd.workload import SSDWorkload

TINY = EMBEDDED.replace(name="tiny", targets=(Metric("mAP", 0.99),),
                        schedule=Schedule(unit="epoch", every=1, budget=2), global_batch_size=8,
                        synth_train_images=24, synth_val_images=8, eval_batch_size=8)


class TinySSD(SSDWorkload):
    @classmethod
    def configs(cls):
        return {"tiny": TINY}


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.mark.slow
def test_embedded_default_short_run_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "mlperf_fast.train", "ssd", "--output", str(out), "--quiet",
         "--budget", "1", "--set", "synth_train_images=64", "--set", "synth_val_images=16",
         "--set", "global_batch_size=16", "--set", "schedule.every=1"],
        check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MLPERF_FAST_CACHE": str(tmp_path / "cache")})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads((out / "run_0" / "report.json").read_text())
    assert report["compliance"]["passed"], report["compliance"]["messages"]
    assert report["compliance"]["ruleset"] == "training 1.0.0"  # SSD-ResNet34's round
    assert report["status"] != "converged"  # one epoch of 4 steps: far from the target
    (evaluation,) = report["history"]
    assert 0.0 <= evaluation["quality"]["mAP"] < 1.0
    hp = report["hyperparameters"]
    assert hp["train_samples"] == 64 and hp["eval_samples"] == 16
    assert hp["max_samples"] == 1 and hp["opt_learning_rate_warmup_steps"] == 4
    log = (out / "run_0" / "mlperf.log").read_text()
    assert '"key": "submission_benchmark", "value": "ssd"' in log


def _weights(w):
    return {k: v.clone() for k, v in w.model.state_dict().items()}


def _clone(state):
    return {"model": {k: v.clone() for k, v in state["model"].items()},
            "optimizer": {"state": {k: {n: t.clone() for n, t in v.items()}
                                    for k, v in state["optimizer"]["state"].items()},
                          "param_groups": state["optimizer"]["param_groups"]},
            "step": dict(state["step"])}


def test_resume_is_exact():
    torch.set_num_threads(1)
    a = TinySSD(TINY, RunContext(seed=3, device=torch.device("cpu")))
    a.build()
    a.train(0, 1)
    saved = _clone(a.state_dict())
    a.train(1, 2)
    b = TinySSD(TINY, RunContext(seed=3, device=torch.device("cpu")))
    b.build()
    b.load_state_dict(saved)
    b.train(1, 2)
    wa, wb = _weights(a), _weights(b)
    for k, v in wa.items():
        assert torch.equal(v, wb[k]), k
    assert a.trainer.applied == b.trainer.applied == 2 * 3  # 24 images / 8 per step
    result = a.evaluate()
    assert set(result) == {"mAP"} and 0.0 <= result["mAP"] <= 1.0


def _rules(name: str) -> list[dict]:
    from mlperf_fast.harness.compliance import load_rules

    return load_rules(name, "1.0.0")


class _Sized:
    def __init__(self, n: int, classes: int = 80):
        self.n, self.num_classes = n, classes

    def __len__(self) -> int:
        return self.n


def _closed(cfg, world_size: int) -> SSDWorkload:
    w = SSDWorkload(cfg, RunContext(seed=1, device=torch.device("cpu"), world_size=world_size))
    w._splits = (_Sized(COCO_TRAIN_NONEMPTY), _Sized(COCO_VAL))
    return w


def test_closed_keys_are_the_v1_rules():
    hp = _closed(CLOSED, 8).hyperparameters()
    required = {r["KEY"]["NAME"] for r in _rules("closed_ssd.yaml") if "KEY" in r}
    required -= {"eval_accuracy"}
    assert required <= set(hp), required - set(hp)
    assert hp["model_bn_span"] == 128 and hp["global_batch_size"] == 1024
    # the rules: the rate after the warmup, and the warmup in steps (an integer >= 1)
    assert hp["opt_base_learning_rate"] == pytest.approx(0.08)  # 2.5e-3 * 1024 / 32
    assert hp["opt_learning_rate_warmup_steps"] == 299  # int(2.619685 * 117266 / 1024)
    assert hp["opt_learning_rate_decay_boundary_epochs"] == [40, 50]
    assert hp["max_samples"] == 50 and hp["opt_learning_rate_warmup_factor"] == 0
    assert hp["opt_weight_decay"] == 5e-4
    # the optimizer's rate: 0 at the first step, (1 - 1/299) of 0.08 after the warmup (the
    # reference sets nothing then), 0.008 from epoch 40, 0.0008 from epoch 50
    n, wb = CLOSED.steps_per_epoch(COCO_TRAIN_NONEMPTY), CLOSED.warmup_steps(COCO_TRAIN_NONEMPTY)

    def lr(step):
        return ssd_warmup_multistep(step, CLOSED.base_lr, n, wb, CLOSED.warmup_factor,
                                    CLOSED.decay_epochs, CLOSED.decay_gamma)

    assert lr(0) == 0.0 and lr(wb + 5) == pytest.approx(0.08 * (1 - 1 / 299))
    assert lr(40 * n) == pytest.approx(0.008) and lr(50 * n) == pytest.approx(0.0008)


@pytest.mark.parametrize("batch", sorted(RCPS))
def test_closed_configs_follow_their_rcps(batch):
    from mlperf_fast.harness import rcp as rcp_module

    rcp = RCPS[batch]
    cfg = CLOSED if batch == 1024 else rcp_config(batch)
    assert SSDWorkload.configs()[f"closed_bs{batch}"] == rcp_config(batch)
    w = _closed(cfg, batch // rcp.bn_span)
    hp = w.hyperparameters()
    assert hp["model_bn_span"] == rcp.bn_span
    assert hp["opt_base_learning_rate"] == pytest.approx(rcp.lr_per_32 * batch / 32)
    assert hp["opt_learning_rate_warmup_steps"] == int(rcp.warmup_epochs * COCO_TRAIN_NONEMPTY
                                                        / batch)
    # every key the compliance rules check, as they check it
    assert hp["opt_learning_rate_warmup_steps"] >= 1 and hp["max_samples"] in [1, 50]
    a, b = hp["opt_learning_rate_decay_boundary_epochs"]
    assert (10 * (a / 40 - 1)).is_integer() and (10 * (b / 50 - 1)).is_integer()
    records = rcp_module.load_rcps("ssd", "1.0.0")
    assert records[rcp.name]["BS"] == batch
    assert records[rcp.name]["Hyperparams"] == {
        "opt_base_learning_rate": rcp.lr_per_32, "opt_learning_rate_warmup_steps":
        rcp.warmup_epochs, "opt_learning_rate_decay_boundary_epochs": list(rcp.decay_epochs),
        "opt_learning_rate_warmup_factor": 0, "opt_weight_decay": rcp.weight_decay,
        "max_samples": rcp.max_samples, "model_bn_span": rcp.bn_span}
    assert max(records[rcp.name]["Epochs to converge"]) == rcp.converged
    # the file holds the reference's arguments: compared as they stand, the rate per 32 images
    # and the warmup in epochs differ from any log
    raw = rcp_match("ssd", "closed", hp, "1.0.0")
    assert raw["nearest"] == rcp.name
    assert set(raw["differences"]) == {"opt_base_learning_rate",
                                       "opt_learning_rate_warmup_steps"}
    # converted to what the reference logs with those arguments (as the harness's RCP check
    # does), the run matches its RCP; with the reference's default crop it would not
    assert rcp_match("ssd", "closed", hp, "1.0.0", w.rcp_as_logged) == {"name": rcp.name}
    one_crop = rcp_match("ssd", "closed", {**hp, "max_samples": 1}, "1.0.0", w.rcp_as_logged)
    assert one_crop["differences"] == {"max_samples": {"rcp": 50, "run": 1}}


def test_rcp_arguments_and_the_crop_are_checked():
    with pytest.raises(ValueError, match="no SSD v1.0 RCP at global batch 512"):
        rcp_config(512)
    assert CLOSED.crop_iterations == 50 and CLOSED.replace(crop_iterations=1).crop_iterations == 1
    with pytest.raises(ValueError, match="crop_iterations"):
        CLOSED.replace(crop_iterations=10)


def test_data_errors_come_first(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        SSDWorkload.check_data(CLOSED, None)
    with pytest.raises(DataError, match="instances_train2017.json"):
        SSDWorkload.check_data(CLOSED, str(tmp_path))
    w = TinySSD(TINY.replace(num_classes=5), RunContext(seed=1, device=torch.device("cpu")))
    with pytest.raises(DataError, match="classes"):
        w.splits()
