"""The RetinaNet workload: the embedded default through the command line (a fresh cache: the
set generated, read back, trained on for a few steps, evaluated) with a log that passes the
compliance checker; an exact resume; the closed configuration's MLPerf keys against
closed_ssd.yaml and its RCP; the input pipeline's batches; data errors before any work."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mlperf_fast.harness import RunOptions, run_workload
from mlperf_fast.harness.rcp import rcp_match
from mlperf_fast.harness.workload import DataError, Metric, RunContext, Schedule
from mlperf_fast.workloads.retinanet.config import (
    CLOSED,
    EMBEDDED,
    OPENIMAGES_TRAIN,
    RCP_LR,
    rcp_config,
)
from mlperf_fast.workloads.retinanet.pipeline import (
    Preprocessing,
    pad_targets,
    prepare,
    train_batches,
)
from mlperf_fast.workloads.retinanet.workload import RetinaNetWorkload

TINY = EMBEDDED.replace(
    name="tiny", targets=(Metric("mAP", 0.99),), schedule=Schedule(unit="epoch", every=1,
                                                                   budget=2),
    global_batch_size=8, planes=(8, 8, 16, 16), stem=8, fpn_channels=16, head_convs=1,
    num_classes=3, image_size=(64, 64), anchor_sizes=(16, 32, 64), eval_batch_size=8,
    synth_classes=3, synth_train_images=24, synth_val_images=6, synth_size=(64, 64),
    synth_max_objects=3)


class TinyRetinaNet(RetinaNetWorkload):
    @classmethod
    def configs(cls):
        return {"tiny": TINY}


pytestmark = pytest.mark.usefixtures("private_cache")


def _rules(name: str) -> list[dict]:
    from mlperf_fast.harness.compliance import load_rules

    return load_rules(name)


@pytest.mark.slow
def test_embedded_default_short_run_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mlperf_fast.train", "retinanet", "--budget",
                           "0.1", "--output", str(out), "--quiet"], check=False,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MLPERF_FAST_CACHE": str(tmp_path / "cache")})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads((out / "run_0" / "report.json").read_text())
    assert report["benchmark"] == "ssd" and report["config"] == "embedded"
    assert report["compliance"]["passed"], report["compliance"]["messages"]
    assert report["steps"] == 10  # 0.1 of 100 steps (1600 images, 16 per step)
    (last,) = report["history"]
    assert last["progress"] == 0.1 and 0.0 <= last["quality"]["mAP"] < 1.0
    hp = report["hyperparameters"]
    assert hp["train_samples"] == EMBEDDED.synth_train_images
    assert hp["eval_samples"] == EMBEDDED.synth_val_images
    assert hp["opt_name"] == "adam" and hp["opt_learning_rate_warmup_factor"] == 1e-3


def _weights(w):
    return {k: v.clone() for k, v in w.model.state_dict().items()}


def _copy(state):
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: _copy(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_copy(v) for v in state]
    return state


def test_resume_is_exact():
    a = TinyRetinaNet(TINY, RunContext(seed=3, device=torch.device("cpu")))
    a.build()
    a.train(0, 1)
    saved = _copy(a.state_dict())
    a.train(1, 2)
    b = TinyRetinaNet(TINY, RunContext(seed=3, device=torch.device("cpu")))
    b.build()
    b.load_state_dict(saved)
    b.train(1, 2)
    for k, v in _weights(a).items():
        assert torch.equal(v, _weights(b)[k]), k
    assert a.trainer.applied == b.trainer.applied == 2 * 3  # 24 images / 8 per step
    # the warmup: the first update at 1e-3 of the rate, the rate itself after one epoch
    assert a.lr(0) == pytest.approx(TINY.lr * 1e-3)
    assert a.lr(3) == TINY.lr
    assert 0.0 <= a.evaluate()["mAP"] <= 1.0


def test_tiny_run_passes_compliance_and_fractional_budgets(tmp_path):
    options = RunOptions(config="tiny", output_dir=str(tmp_path / "run"), device="cpu",
                         echo_log=False, progress=False, budget=1.5)
    (run,) = run_workload(TinyRetinaNet, options)["runs"]
    assert run["compliance"]["passed"], run["compliance"]["messages"]
    # 1.5 epochs of 3 steps: rounded up to whole steps, 5 of them
    assert [h["progress"] for h in run["history"]] == [1, pytest.approx(5 / 3)]
    assert run["steps"] == 5


def test_batches_are_padded_and_flipped_by_their_seed():
    w = TinyRetinaNet(TINY, RunContext(seed=1, device=torch.device("cpu")))
    w.build()
    prep = Preprocessing.of(TINY)
    first = list(train_batches(w.train_data, 8, 1, 0, prep))
    again = list(train_batches(w.train_data, 8, 1, 0, prep, workers=0, start=1, stop=2))
    assert len(first) == 3
    for a, b in zip(first[1], again[0]):
        assert torch.equal(a, b)  # a batch is a function of (seed, epoch, index) alone
    x, boxes, labels, counts = first[0]
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32
    assert boxes.shape[:2] == labels.shape and boxes.shape[1] == int(counts.max())
    for i, n in enumerate(counts.tolist()):
        assert (boxes[i, n:] == 0).all() and (labels[i, n:] == 0).all()
        assert ((boxes[i, :n, 2:] > boxes[i, :n, :2]).all())
    # the flip mirrors the boxes with the image
    img = w.train_data.load_image(0)
    t = w.train_data.target(0)
    plain, b0 = prepare(img, t["boxes"], prep, None)
    flipped, b1 = prepare(img, t["boxes"], prep.__class__(prep.size, prep.mean, prep.std, 1.0),
                          torch.Generator().manual_seed(0))
    assert torch.equal(flipped, plain.flip(-1))
    assert torch.equal(b1[:, [0, 2]], 64 - b0[:, [2, 0]])
    empty_b, _empty_l, empty_n = pad_targets([torch.zeros(0, 4)], [torch.zeros(0, dtype=int)])
    assert empty_b.shape == (1, 1, 4) and int(empty_n[0]) == 0


class _Sized:
    def __init__(self, n: int, classes: int = 264):
        self.n, self.num_classes = n, classes

    def __len__(self) -> int:
        return self.n


def test_closed_keys_are_the_rules_and_the_rcp():
    w = RetinaNetWorkload(CLOSED, RunContext(seed=1, device=torch.device("cpu"), world_size=8))
    w._sets = (_Sized(OPENIMAGES_TRAIN), _Sized(24_781))
    hp = w.hyperparameters()
    required = {r["KEY"]["NAME"] for r in _rules("closed_ssd.yaml") if "KEY" in r}
    required -= {"eval_accuracy", "weights_initialization"}
    assert required <= set(hp), required - set(hp)
    assert hp["opt_name"] == "adam" and hp["opt_weight_decay"] == 0.0
    assert rcp_match("ssd", "closed", hp) == {"name": "ssd_ref_256"}
    # the closed facts, as config.py cites them
    c = CLOSED
    assert (c.blocks, c.groups, c.width_per_group, c.norm, c.trainable_layers) == \
        ((3, 4, 6, 3), 32, 4, "frozen", 3)
    assert (c.returned_layers, c.extra_levels, c.fpn_channels, c.head_convs) == \
        ((2, 3, 4), True, 256, 4)
    assert c.anchors_per_location == 9 and c.anchor_sizes == (32, 64, 128, 256, 512)
    assert (c.num_classes, c.focal_alpha, c.focal_gamma) == (264, 0.25, 2.0)
    assert (c.fg_iou_thresh, c.bg_iou_thresh, c.allow_low_quality_matches) == (0.5, 0.4, True)
    assert (c.image_size, c.hflip_prob) == ((800, 800), 0.5)
    assert (c.score_thresh, c.topk_candidates, c.nms_thresh, c.detections_per_img) == \
        (0.05, 1000, 0.5, 300)
    assert (c.lr, c.warmup_epochs, c.warmup_factor, c.weight_decay) == (1e-4, 1.0, 1e-3, 0.0)
    assert c.global_batch_size == 256 and c.targets[0].target == 0.340
    assert c.schedule.every == 1


@pytest.mark.parametrize("batch", sorted(RCP_LR))
def test_closed_configs_at_every_rcp(batch):
    cfg = RetinaNetWorkload.configs()[f"closed_bs{batch}"]
    assert cfg == rcp_config(batch) and cfg.lr == RCP_LR[batch][0]
    w = RetinaNetWorkload(cfg, RunContext(seed=1, device=torch.device("cpu"), world_size=8))
    w._sets = (_Sized(OPENIMAGES_TRAIN), _Sized(24_781))
    assert rcp_match("ssd", "closed", w.hyperparameters()) == {"name": f"ssd_ref_{batch}"}
    with pytest.raises(ValueError, match="no RetinaNet v2.1 RCP at global batch 1024"):
        rcp_config(1024)


def test_data_errors_come_first(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        RetinaNetWorkload.check_data(CLOSED, None)
    with pytest.raises(DataError, match="train/data"):
        RetinaNetWorkload.check_data(CLOSED, str(tmp_path))  # empty
    w = TinyRetinaNet(TINY.replace(num_classes=5), RunContext(seed=1, device=torch.device("cpu")))
    with pytest.raises(DataError, match="categories"):
        w.sets()
