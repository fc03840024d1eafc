"""The DLRM workload on a tiny generated data set: through the harness to its target with a
compliant log, an exact resume from state_dict, and the closed configuration's MLPerf keys
against the installed closed_dlrm.yaml."""
import os

import pytest
import torch

from mlperf_fast.harness import RunOptions, run_workload
from mlperf_fast.harness.workload import DataError, Metric, RunContext, Schedule
from mlperf_fast.workloads.dlrm.config import CLOSED, EMBEDDED
from mlperf_fast.workloads.dlrm.workload import DLRMWorkload, weights_initialization_tensors

TINY = EMBEDDED.replace(
    name="tiny", targets=(Metric("AUC", 0.6),),
    schedule=Schedule(unit="epoch", every=0.25, budget=2.0), global_batch_size=128,
    embedding_dim=4, bottom_mlp=(8, 4), top_mlp=(8, 1), lr=2.0, warmup_steps=8,
    decay_start_step=64, decay_steps=64, eval_batch_size=1000,
    synth_days=2, synth_rows_per_day=8192, synth_vocab=(30,) * 26)  # Bayes AUC 0.76


class TinyDLRM(DLRMWorkload):
    @classmethod
    def configs(cls):
        return {"tiny": TINY}


pytestmark = pytest.mark.usefixtures("private_cache")


def test_reaches_target_with_compliant_log(tmp_path):
    options = RunOptions(config="tiny", output_dir=str(tmp_path / "out"), device="cpu",
                         echo_log=False, progress=False)
    (run,) = run_workload(TinyDLRM, options)["runs"]
    assert run["status"] == "converged", run["history"]
    assert run["compliance"]["passed"], run["compliance"]["messages"]
    assert run["hyperparameters"]["train_samples"] == 8192
    assert run["hyperparameters"]["eval_samples"] == 4096
    with open(os.path.join(tmp_path, "out", "run_0", "mlperf.log")) as f:
        log = f.read()
    assert log.count('"key": "weights_initialization"') == 1 + 2 + 2


def _weights(w):
    return {k: v.clone() for k, v in w.model.state_dict().items()}


def test_resume_is_exact():
    ctx = RunContext(seed=3, device=torch.device("cpu"))
    a = DLRMWorkload(TINY, ctx)
    a.build()
    a.train(0, 0.25)
    state = {k: v for k, v in a.state_dict().items()}
    saved = {"model": _weights(a), "optimizer": state["optimizer"], "step": dict(state["step"])}
    a.train(0.25, 0.5)
    b = DLRMWorkload(TINY, RunContext(seed=3, device=torch.device("cpu")))
    b.build()
    b.load_state_dict(saved)
    b.train(0.25, 0.5)
    for k, v in _weights(a).items():
        assert torch.equal(v, _weights(b)[k]), k
    assert a.trainer.applied == b.trainer.applied == 32  # 64 batches per epoch
    auc = a.evaluate()["AUC"]
    assert 0.5 < auc < 1


def test_train_returns_reached_progress_off_the_grid():
    w = DLRMWorkload(TINY, RunContext(seed=1, device=torch.device("cpu")))
    w.build()
    assert w.train(0, 0.25) is None  # 16 of 64 steps
    assert w.train(0.25, 0.3) == 0.296875  # 19 of 64: the step boundary actually reached


def test_closed_keys_are_the_rules():
    from mlperf_fast.harness.compliance import load_rules

    rules = load_rules("closed_dlrm.yaml")
    required = {r["KEY"]["NAME"] for r in rules if "KEY" in r} - {"eval_accuracy",
                                                                   "weights_initialization"}
    ctx = RunContext(seed=1, device=torch.device("cpu"))
    w = DLRMWorkload(CLOSED, ctx)
    w._splits = lambda: (_Sized(4_195_197_692), _Sized(89_137_319), ())
    hp = w.hyperparameters()
    assert required <= set(hp), required - set(hp)
    assert hp["sgd_opt_learning_rate_decay_poly_power"] == 2
    end = next(r["END"]["CHECK"] for r in rules if "END" in r)
    want = eval(end.split("==")[1].strip().replace("sorted(", "(", 1)[1:-1])  # the listed names
    assert sorted(weights_initialization_tensors(CLOSED)) == sorted(want)


class _Sized:
    def __init__(self, n):
        self.num_samples = n


def test_closed_needs_data():
    with pytest.raises(DataError, match="needs --data-dir"):
        DLRMWorkload.check_data(CLOSED, None)
    with pytest.raises(DataError, match="is not a folder"):
        DLRMWorkload.check_data(CLOSED, "/nonexistent")
