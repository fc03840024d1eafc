"""The ResNet workload: the embedded default through the command line to its target (a fresh
cache: the data set generated, read back, trained on) with a compliant log; an exact resume;
the TFRecord layout through the same workload; the closed configurations' MLPerf keys against
the installed closed_resnet*.yaml; data errors before any work."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from mlperf_fast.harness import RunOptions, run_workload
from mlperf_fast.harness.workload import DataError, Metric, RunContext, Schedule
from mlperf_fast.workloads.resnet import synth
from mlperf_fast.workloads.resnet.config import CLOSED, CLOSED_SGD, EMBEDDED, IMAGENET_TRAIN
from mlperf_fast.workloads.resnet.data import imagefolder_to_tfrecords
from mlperf_fast.workloads.resnet.workload import ResNetWorkload

TINY = EMBEDDED.replace(
    name="tiny", targets=(Metric("top1", 0.0),), schedule=Schedule(unit="epoch", every=1,
                                                                    budget=2),
    global_batch_size=16, num_classes=4, blocks=(1, 1, 1, 1), widths=(4, 4, 8, 8), stem=4,
    image_size=32, train_epochs=2, eval_batch_size=20, synth_classes=4,
    synth_train_per_class=12, synth_val_per_class=5)


class TinyResNet(ResNetWorkload):
    @classmethod
    def configs(cls):
        return {"tiny": TINY}


pytestmark = pytest.mark.usefixtures("private_cache")


def _rules(name: str) -> list[dict]:
    from mlperf_fast.harness.compliance import load_rules

    return load_rules(name)


@pytest.mark.slow
def test_embedded_default_reaches_its_target_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mlperf_fast.train", "resnet", "--output",
                           str(out), "--quiet"], check=False, capture_output=True, text=True,
                          timeout=1500,
                          env={**os.environ, "MLPERF_FAST_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "run_0" / "report.json").read_text())
    assert report["status"] == "converged", report["history"]
    assert report["compliance"]["passed"], report["compliance"]["messages"]
    assert report["history"][-1]["quality"]["top1"] >= EMBEDDED.targets[0].target
    hp = report["hyperparameters"]
    assert hp["train_samples"] == 6000 and hp["eval_samples"] == 1000
    assert hp["opt_name"] == "lars" and hp["lars_opt_learning_rate_decay_poly_power"] == 2


def _weights(w):
    return {k: v.clone() for k, v in w.model.state_dict().items()}


def test_resume_is_exact():
    a = TinyResNet(TINY, RunContext(seed=3, device=torch.device("cpu")))
    a.build()
    a.train(0, 1)
    state = a.state_dict()
    saved = {"model": _weights(a), "optimizer": state["optimizer"], "step": dict(state["step"])}
    saved["optimizer"] = {"state": {k: {n: t.clone() for n, t in v.items()}
                                    for k, v in saved["optimizer"]["state"].items()},
                          "param_groups": saved["optimizer"]["param_groups"]}
    a.train(1, 2)
    b = TinyResNet(TINY, RunContext(seed=3, device=torch.device("cpu")))
    b.build()
    b.load_state_dict(saved)
    b.train(1, 2)
    for k, v in _weights(a).items():
        assert torch.equal(v, _weights(b)[k]), k
    assert a.trainer.applied == b.trainer.applied == 2 * 3  # 48 images / 16 per step
    top1 = a.evaluate()["top1"]
    assert 0.0 <= top1 <= 1.0


def test_tfrecord_shards_train_like_the_image_folder(tmp_path):
    w = TinyResNet(TINY, RunContext(seed=1, device=torch.device("cpu")))
    folder = w.data_dir()
    shards = tmp_path / "shards"
    imagefolder_to_tfrecords(folder, str(shards), train_shards=3, val_shards=2)
    ResNetWorkload.check_data(TINY, str(shards))
    runs = {}
    for name, data_dir in (("folder", None), ("tfrecord", str(shards))):
        options = RunOptions(config="tiny", output_dir=str(tmp_path / name), device="cpu",
                             echo_log=False, progress=False, data_dir=data_dir)
        (run,) = run_workload(TinyResNet, options)["runs"]
        assert run["compliance"]["passed"], run["compliance"]["messages"]
        runs[name] = run
    for key in ("train_samples", "eval_samples"):
        assert runs["folder"]["hyperparameters"][key] == runs["tfrecord"]["hyperparameters"][key]


class _Sized:
    def __init__(self, n: int, classes: int = 1000):
        self.n, self.num_classes = n, classes

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("config,optimizer_yaml", [(CLOSED, "closed_resnet_lars.yaml"),
                                                    (CLOSED_SGD, "closed_resnet_sgd.yaml")])
def test_closed_keys_are_the_rules(config, optimizer_yaml):
    w = ResNetWorkload(config, RunContext(seed=1, device=torch.device("cpu"), world_size=8))
    w._splits = (_Sized(IMAGENET_TRAIN), _Sized(50_000))
    hp = w.hyperparameters()
    required = set()
    for name in ("closed_resnet.yaml", optimizer_yaml):
        required |= {r["KEY"]["NAME"] for r in _rules(name) if "KEY" in r}
    required -= {"eval_accuracy", "weights_initialization"}
    assert required <= set(hp), required - set(hp)
    o = config.optimizer
    assert hp[f"{o}_opt_end_learning_rate"] == 0.0001
    assert hp[f"{o}_opt_learning_rate_decay_poly_power"] == 2
    assert math.log2(hp[f"{o}_opt_weight_decay"] / 0.0001) == round(
        math.log2(hp[f"{o}_opt_weight_decay"] / 0.0001))
    assert hp["model_bn_span"] == 3264 // 8
    if o == "lars":
        assert hp["lars_epsilon"] == 0.0
        assert hp["lars_opt_learning_rate_decay_steps"] == 14523  # the RCP's
    else:
        assert abs(hp["sgd_opt_base_learning_rate"] / 0.001 -
                   round(hp["sgd_opt_base_learning_rate"] / 0.001)) < 1e-9


def test_data_errors_come_first(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        ResNetWorkload.check_data(CLOSED, None)
    with pytest.raises(DataError):
        ResNetWorkload.check_data(CLOSED, str(tmp_path))  # empty: neither layout
    # a data set with another number of classes than the configuration's
    w = TinyResNet(TINY.replace(num_classes=7), RunContext(seed=1, device=torch.device("cpu")))
    with pytest.raises(DataError, match="classes"):
        w.splits()


def test_weights_initialization_events_name_every_parameter():
    events = []

    class Log:
        def event(self, key, metadata):
            events.append((key, metadata["tensor"]))

    w = ResNetWorkload(CLOSED, RunContext(seed=1, device=torch.device("cpu")))
    w.log_weights_initialization(Log())
    assert len(events) == 161 and events[0] == ("weights_initialization", "conv0_weight")
    assert synth.wnid(0).startswith("n")
