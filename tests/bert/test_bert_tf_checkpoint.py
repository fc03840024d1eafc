"""BERT from the reference's TensorFlow checkpoint: the variable names of mlperf-logging's
closed_bert.yaml mapped one to one onto BERT-large's state dict, and a tiny BERT that TensorFlow
2.21 saved under those names (tests/data/fixtures/tf_checkpoints/bert_tiny, with LAMB slots and
global_step) loaded without TensorFlow into the reference port and the optimized model: the
first layer's output equal to a numpy computation by hand from the fixture's arrays (TensorFlow's
(in, out) layout), the logits equal to those TensorFlow computed from its own variables; the
refusals; the convert command.

Tolerances: float64 arithmetic of the same operations in another order agrees to ~1e-15."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mlperf_fast.data.tf_checkpoint import read_index, read_tf_checkpoint
from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.bert import weights
from mlperf_fast.workloads.bert.model import BertForPreTraining
from mlperf_fast.workloads.bert.reference import (
    BERT_LARGE,
    BertModelConfig,
    ReferenceBertForPreTraining,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "data", "fixtures", "tf_checkpoints")
PREFIX = os.path.join(FIXTURES, "bert_tiny")
with open(os.path.join(FIXTURES, "manifest.json")) as _f:
    TF = json.load(_f)["bert_tiny_logits"]
CONFIG = BertModelConfig(**TF["config"])
F64 = {"rtol": 1e-9, "atol": 1e-12}


def closed_bert_names(layers: int = 24) -> list[str]:
    """The tensors closed_bert.yaml (mlperf-logging, training 2.1) requires to be initialized,
    in its order."""
    names = ["bert/embeddings/word_embeddings", "bert/embeddings/position_embeddings",
             "bert/embeddings/token_type_embeddings", "bert/embeddings/LayerNorm/gamma",
             "bert/embeddings/LayerNorm/beta"]
    for i in range(layers):
        p = f"bert/encoder/layer_{i}/"
        for dense in ("attention/self/query", "attention/self/key", "attention/self/value",
                      "attention/output/dense"):
            names += [p + dense + "/kernel", p + dense + "/bias"]
        names += [p + "attention/output/LayerNorm/gamma", p + "attention/output/LayerNorm/beta",
                  p + "intermediate/dense/kernel", p + "intermediate/dense/bias",
                  p + "output/dense/kernel", p + "output/dense/bias",
                  p + "output/LayerNorm/gamma", p + "output/LayerNorm/beta"]
    return names + ["bert/pooler/dense/kernel", "bert/pooler/dense/bias",
                    "cls/predictions/output_bias", "cls/predictions/transform/dense/kernel",
                    "cls/predictions/transform/dense/bias",
                    "cls/predictions/transform/LayerNorm/gamma",
                    "cls/predictions/transform/LayerNorm/beta",
                    "cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"]


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor(TF["input_ids"])
    positions = torch.tensor(TF["masked_lm_positions"])
    return {"input_ids": ids, "token_type_ids": torch.tensor(TF["token_type_ids"]),
            "attention_mask": torch.tensor(TF["attention_mask"]),
            "masked_lm_positions": positions, "masked_lm_ids": torch.zeros_like(positions),
            "masked_lm_weights": torch.ones(positions.shape, dtype=torch.float64),
            "next_sentence_labels": torch.zeros(ids.shape[0], dtype=torch.long)}


def test_closed_bert_names_map_onto_bert_large():
    names = closed_bert_names()
    assert len(names) == 398
    with torch.device("meta"):
        want = ReferenceBertForPreTraining(BERT_LARGE).state_dict()
    mapped = {weights.tf_name(n)[0]: n for n in names}
    assert sorted(mapped) == sorted(want)  # one to one, nothing left over
    transposed = {n for n in names if weights.tf_name(n)[1]}
    assert transposed == {n for n in names if n.endswith("/kernel")}
    assert weights.tf_name("bert/encoder/layer_17/output/LayerNorm/beta") == \
        ("bert.encoder.layer.17.output.LayerNorm.bias", False)
    assert weights.tf_name("cls/seq_relationship/output_weights") == \
        ("cls.seq_relationship.weight", False)
    for other in ("global_step", "bert/encoder/layer_0/output/dense/kernel/adam_m",
                  "bert/embeddings/word_embeddings/ExponentialMovingAverage", "foo/bar/kernel"):
        assert weights.tf_name(other) is None, other
    assert weights.tf_ignored("bert/pooler/dense/kernel/adam_v")
    assert weights.tf_ignored("global_step") and not weights.tf_ignored("bert/pooler/dense/bias")
    assert weights.tf_ignored("loss_scale", ignore=["loss_scale"])
    assert weights.tf_ignored("a/b/ExponentialMovingAverage", ignore=["/ExponentialMovingAverage"])


def _layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def first_layer_by_hand(v: dict[str, np.ndarray]) -> np.ndarray:
    """modeling.py's embeddings and first transformer layer in numpy, on the variables as
    TensorFlow stores them (``x @ kernel``), in float64: (B, S, H)."""
    v = {k: a.astype(np.float64) for k, a in v.items() if a.dtype == np.float32}
    ids, types = np.array(TF["input_ids"]), np.array(TF["token_type_ids"])
    mask = np.array(TF["attention_mask"], dtype=np.float64)
    b, s = ids.shape
    e = "bert/embeddings/"
    x = v[e + "word_embeddings"][ids] + v[e + "token_type_embeddings"][types] + \
        v[e + "position_embeddings"][:s]
    x = _layer_norm(x, v[e + "LayerNorm/gamma"], v[e + "LayerNorm/beta"])
    p = "bert/encoder/layer_0/"

    def dense(y, scope):
        return y @ v[p + scope + "/kernel"] + v[p + scope + "/bias"]

    heads, d = CONFIG.num_attention_heads, CONFIG.head_size
    q, k, val = (dense(x, f"attention/self/{n}").reshape(b, s, heads, d).transpose(0, 2, 1, 3)
                 for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + (1 - mask)[:, None, None, :] * -10000.0
    ctx = (_softmax(scores) @ val).transpose(0, 2, 1, 3).reshape(b, s, -1)
    a = _layer_norm(dense(ctx, "attention/output/dense") + x,
                    v[p + "attention/output/LayerNorm/gamma"],
                    v[p + "attention/output/LayerNorm/beta"])
    h = _gelu(dense(a, "intermediate/dense"))
    return _layer_norm(dense(h, "output/dense") + a, v[p + "output/LayerNorm/gamma"],
                       v[p + "output/LayerNorm/beta"])


@pytest.mark.parametrize("source", ["prefix", "index", "arrays"])
def test_tiny_bert_from_tensorflow(source):
    arrays = read_tf_checkpoint(PREFIX)
    given = {"prefix": PREFIX, "index": PREFIX + ".index", "arrays": arrays}[source]
    model = ReferenceBertForPreTraining(CONFIG)
    assert weights.load_checkpoint(model, given) == "tf"
    model = model.double().eval()
    seen = {}
    model.bert.encoder.layer[0].register_forward_hook(
        lambda mod, args, out: seen.setdefault("layer0", out))
    x = batch()
    with torch.no_grad():
        _, _, _, mlm, nsp = model(**x)
    torch.testing.assert_close(seen["layer0"], torch.from_numpy(first_layer_by_hand(arrays)),
                               **F64)
    torch.testing.assert_close(mlm, torch.tensor(TF["mlm_logits"], dtype=torch.float64), **F64)
    torch.testing.assert_close(nsp, torch.tensor(TF["nsp_logits"], dtype=torch.float64), **F64)
    # the optimized model takes the same checkpoint (its MLM logits: the weighted predictions,
    # here all of them, in (batch, prediction) order)
    fast = BertForPreTraining(CONFIG)
    weights.load_checkpoint(fast, given)
    fast = fast.double().eval()
    with torch.no_grad():
        _, _, _, mlm_fast, nsp_fast = fast(**x)
    torch.testing.assert_close(mlm_fast, mlm.reshape(-1, CONFIG.vocab_size), **F64)
    torch.testing.assert_close(nsp_fast, nsp, **F64)


def test_from_tf_mapping_and_what_it_leaves_out():
    arrays = read_tf_checkpoint(PREFIX)
    assert {"global_step", "bert/embeddings/word_embeddings/adam_m",
            "bert/pooler/dense/kernel/adam_v"} <= set(arrays)
    assert weights.detect_format(arrays) == "tf"
    state = weights.from_tf(arrays)
    assert sorted(state) == sorted(ReferenceBertForPreTraining(CONFIG).state_dict())
    kernel = arrays["bert/encoder/layer_1/intermediate/dense/kernel"]  # (hidden, intermediate)
    assert kernel.shape == (CONFIG.hidden_size, CONFIG.intermediate_size)
    got = state["bert.encoder.layer.1.intermediate.dense.weight"]
    assert got.is_contiguous() and torch.equal(got, torch.from_numpy(kernel).t())
    assert torch.equal(state["cls.seq_relationship.weight"],  # (2, hidden): as it is
                       torch.from_numpy(arrays["cls/seq_relationship/output_weights"]))
    assert torch.equal(state[weights.BIAS],
                       torch.from_numpy(arrays["cls/predictions/output_bias"]))


def test_refusals():
    arrays = read_tf_checkpoint(PREFIX)
    model = ReferenceBertForPreTraining(CONFIG)

    def refused(state, match, fmt="auto"):
        with pytest.raises(weights.CheckpointMismatch, match=match):
            weights.load_checkpoint(model, state, fmt)

    ema = "bert/encoder/layer_0/output/dense/kernel/ExponentialMovingAverage"
    refused({**arrays, ema: arrays["bert/pooler/dense/kernel"]}, f"unexpected: {ema}")
    no_bias = {k: a for k, a in arrays.items() if k != "cls/predictions/output_bias"}
    refused(no_bias, r"missing: cls\.predictions\.bias \(24,\)")
    flat = {**arrays, "bert/pooler/dense/kernel": np.zeros(64, np.float32)}
    refused(flat, r"bert/pooler/dense/kernel is a kernel of shape \(64,\)")
    refused({**arrays, "bert/pooler/dense/kernel": np.zeros((8, 9), np.float32)},
            r"shape: bert\.pooler\.dense\.weight is \(9, 8\) in the checkpoint")
    refused({**arrays, "bert/extra": np.array([b"x"], dtype=object)}, "bert/extra holds object")
    ours = ReferenceBertForPreTraining(CONFIG).state_dict()
    refused(ours, f"none of the {len(ours)} names", "tf")
    with pytest.raises(DataError, match=r"nothing\.index does not exist"):
        weights.load_checkpoint(model, os.path.join(FIXTURES, "nothing"), "tf")


def test_slots_are_not_read(tmp_path):
    """The optimizer slots (two thirds of the phase-1 checkpoint) are skipped unread: damaged,
    they do not stop a load; a damaged weight does."""
    for f in os.listdir(FIXTURES):
        if f.startswith("bert_tiny."):
            shutil.copyfile(os.path.join(FIXTURES, f), tmp_path / f)
    prefix = str(tmp_path / "bert_tiny")
    entries = read_index(prefix)[1]
    data = prefix + ".data-00000-of-00001"

    def flip(name: str) -> None:
        with open(data, "r+b") as f:
            f.seek(entries[name].offset)
            byte = f.read(1)[0]
            f.seek(entries[name].offset)
            f.write(bytes([byte ^ 0x40]))

    flip("bert/embeddings/word_embeddings/adam_m")
    model = ReferenceBertForPreTraining(CONFIG)
    assert weights.load_checkpoint(model, prefix) == "tf"
    flip("bert/pooler/dense/bias")
    with pytest.raises(DataError, match=r"bert_tiny\.data-00000-of-00001: tensor "
                                        r"'bert/pooler/dense/bias' fails its CRC32C check"):
        weights.load_checkpoint(model, prefix)


def test_convert_command(tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert weights.main(["convert", "--tf", PREFIX, "--out", str(out)]) == 0
    line = capsys.readouterr().out
    want = weights.from_tf(read_tf_checkpoint(PREFIX))
    assert f"{len(want)} tensors" in line and "left out 5 TensorFlow variables" in line
    state = torch.load(out, weights_only=True)
    assert list(state) == list(want) and all(torch.equal(state[k], want[k]) for k in want)
    model = BertForPreTraining(CONFIG)
    assert weights.load_checkpoint(model, out) == "ours"
    # a checkpoint that is not a BERT: refused, nothing written, the file named
    bad = tmp_path / "bad.pt"
    assert weights.main(["convert", "--tf", os.path.join(FIXTURES, "sharded"),
                         "--out", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "sharded: not a whole BERT: it has no bert.embeddings" in err and not bad.exists()
    # the module runs as the command the README gives
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "mlperf_fast.workloads.bert.weights", "convert",
                          "--tf", PREFIX + ".index", "--out", str(tmp_path / "again.pt")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert all(torch.equal(again[k], want[k]) for k in want)
