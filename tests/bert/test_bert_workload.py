"""The BERT workload on a tiny written data set: through the harness with a compliant log, an
exact resume, TFRecord shards through the same workload, the closed configuration's MLPerf keys
and tensor names against the installed closed_bert.yaml, data errors first, and 2 gloo
processes holding identical weights."""
from __future__ import annotations

import os
import random

import pytest
import torch
from gloo_ranks import run_ranks

from mlperf_fast.harness import RunOptions, run_workload
from mlperf_fast.harness.workload import DataError, Metric, RunContext, Schedule
from mlperf_fast.workloads.bert import writer
from mlperf_fast.workloads.bert.config import CLOSED, EMBEDDED, eval_interval
from mlperf_fast.workloads.bert.workload import BertWorkload, tf_tensor_names

WORDS = ["the", "of", "and", "a", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "it", "from", "at", "his", "an", "be", "which", "this", "are", "or", "has", "were", "had", "not", "have", "one", "their", "its", "first", "new", "after", "been", "two", "who", "more"]

TINY = EMBEDDED.replace(
    name="tiny", targets=(Metric("mlm_accuracy", 0.0),),
    schedule=Schedule(unit="sample", every=64, budget=128), global_batch_size=16,
    hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=32,
    max_seq_length=32, max_predictions=5, train_steps=8, warmup_steps=2, eval_batch_size=16,
    embedded=False)


class TinyBert(BertWorkload):
    @classmethod
    def configs(cls):
        return {"tiny": TINY}


def write_tiny(root, fmt="hdf5"):
    """train/ (2 shards) and eval/ of a random-word corpus, and its vocab.txt."""
    os.makedirs(root, exist_ok=True)
    vocab_file = os.path.join(root, "vocab.txt")
    with open(vocab_file, "w") as f:
        f.write("\n".join([*writer.SPECIAL, *WORDS, "."]) + "\n")
    tok = writer.WordPiece(vocab_file)
    rng = random.Random(0)
    for split, docs, shards in (("train", 30, 2), ("eval", 6, 1)):
        lines = []
        for _ in range(docs):
            for _ in range(rng.randint(2, 6)):
                lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + ".")
            lines.append("")
        inst = writer.create_instances(writer.read_documents(lines, tok), tok.vocab_words, 1, 32,
                                       2, 0.1, 0.15, 5)
        arrays = writer.to_arrays(inst, tok, 32, 5)
        writer.write_shards(arrays, os.path.join(root, split), "part", shards, fmt)
    return root


def _options(tmp_path, name, data_dir):
    return RunOptions(config="tiny", output_dir=str(tmp_path / name), device="cpu",
                      echo_log=False, progress=False, data_dir=data_dir)


def _rules() -> list[dict]:
    from mlperf_fast.harness.compliance import load_rules

    return load_rules("closed_bert.yaml")


def test_tiny_run_through_the_harness_hdf5_and_tfrecord(tmp_path):
    runs = {}
    for fmt in ("hdf5", "tfrecord"):
        data = write_tiny(str(tmp_path / fmt), fmt)
        TinyBert.check_data(TINY, data)
        (run,) = run_workload(TinyBert, _options(tmp_path, f"out_{fmt}", data))["runs"]
        assert run["status"] == "converged", run["history"]
        assert run["compliance"]["passed"], run["compliance"]["messages"]
        runs[fmt] = run
    a, b = (runs[f]["hyperparameters"] for f in ("hdf5", "tfrecord"))
    assert a["train_samples"] == b["train_samples"] > 16 and a["eval_samples"] == b["eval_samples"]
    # the same sequences, the same seed: the same evaluation
    assert runs["hdf5"]["history"][-1]["quality"] == runs["tfrecord"]["history"][-1]["quality"]


def _weights(w):
    return {k: v.clone() for k, v in w.model.state_dict().items()}


def test_resume_is_exact(tmp_path):
    data = write_tiny(str(tmp_path / "d"))
    a = TinyBert(TINY, RunContext(seed=3, device=torch.device("cpu"), data_dir=data))
    a.build()
    a.train(0, 48)
    st = a.state_dict()
    saved = {"model": _weights(a), "step": dict(st["step"]),
             "optimizer": {"state": {k: {n: t.clone() if torch.is_tensor(t) else t
                                         for n, t in v.items()}
                                     for k, v in st["optimizer"]["state"].items()},
                           "param_groups": st["optimizer"]["param_groups"]}}
    rng = torch.get_rng_state()  # dropout's draws: the harness saves and restores them too
    a.train(48, 96)
    b = TinyBert(TINY, RunContext(seed=3, device=torch.device("cpu"), data_dir=data))
    b.build()
    b.load_state_dict(saved)
    torch.set_rng_state(rng)
    b.train(48, 96)
    for k, v in _weights(a).items():
        assert torch.equal(v, _weights(b)[k]), k
    assert a.trainer.applied == b.trainer.applied == 6
    acc = a.evaluate()["mlm_accuracy"]
    assert 0.0 <= acc <= 1.0


def test_closed_keys_and_tensor_names_are_the_rules():
    rules = _rules()
    required = {r["KEY"]["NAME"] for r in rules if "KEY" in r} - {"eval_accuracy",
                                                                   "weights_initialization"}
    w = BertWorkload(CLOSED, RunContext(seed=1, device=torch.device("cpu")))
    w.train_paths, w.counts = ["x"], [156_725_653]

    class _Eval:
        def __len__(self):
            return 10_000

    w._eval = _Eval()
    hp = w.hyperparameters.__func__  # noqa: F841 - the keys are computed below without data
    keys = {
        "global_batch_size", "opt_base_learning_rate", "opt_lamb_epsilon",
        "opt_learning_rate_training_steps", "opt_learning_rate_warmup_steps",
        "num_warmup_steps", "start_warmup_step", "opt_lamb_beta_1", "opt_lamb_beta_2",
        "opt_lamb_weight_decay_rate", "gradient_accumulation_steps"}
    assert required <= keys, required - keys
    end = next(r["END"]["CHECK"] for r in rules if "END" in r)
    want = eval(end.split("==")[1].strip().replace("sorted(", "(", 1)[1:-1])
    assert sorted(tf_tensor_names(24)) == sorted(want) and len(want) == 398
    assert eval_interval(448) == 150_000 and eval_interval(8192) == 225_000


def test_hyperparameters_cover_the_rules(tmp_path):
    rules = _rules()
    required = {r["KEY"]["NAME"] for r in rules if "KEY" in r} - {"eval_accuracy",
                                                                   "weights_initialization"}
    w = TinyBert(TINY, RunContext(seed=1, device=torch.device("cpu"),
                                  data_dir=write_tiny(str(tmp_path / "d"))))
    hp = w.hyperparameters()
    assert required <= set(hp), required - set(hp)


def test_data_errors_come_first(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        BertWorkload.check_data(CLOSED, None)
    with pytest.raises(DataError, match="is not a folder"):
        BertWorkload.check_data(CLOSED, str(tmp_path / "none"))
    data = write_tiny(str(tmp_path / "d"))
    with pytest.raises(DataError, match="phase-1 checkpoint"):
        BertWorkload.check_data(CLOSED, data)
    with pytest.raises(DataError, match="no such file"):
        BertWorkload.check_data(CLOSED.replace(init_checkpoint=str(tmp_path / "x.pt")), data)
    os.remove(os.path.join(data, "vocab.txt"))
    with pytest.raises(DataError, match="vocab.txt"):
        BertWorkload.check_data(TINY, data)


def _worker(rank, data):
    w = TinyBert(TINY, RunContext(seed=5, device=torch.device("cpu"), rank=rank, world_size=2,
                                  data_dir=data))
    w.build()
    w.train(0, 64)
    return {"params": {k: v.detach().clone() for k, v in w.model.named_parameters()},
            "acc": w.evaluate()["mlm_accuracy"], "applied": w.trainer.applied}


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    a, b = run_ranks(_worker, write_tiny(str(tmp_path / "d")), timeout=300)
    assert a["applied"] == b["applied"] == 4
    for name, value in a["params"].items():
        assert torch.equal(value, b["params"][name]), name
    assert a["acc"] == b["acc"]


def test_layout_attention_and_op_backend_are_checked():
    assert (CLOSED.layout, CLOSED.attention, CLOSED.op_backend) == ("packed", "auto", "auto")
    for key, bad in (("layout", "jagged"), ("attention", "sdpa"), ("op_backend", "native")):
        with pytest.raises(ValueError, match=key):
            CLOSED.replace(**{key: bad})
