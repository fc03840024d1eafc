"""Batched greedy decoding against a plain one-utterance-at-a-time decoder (the MLPerf
reference's loop over torch.nn modules). Transcripts must be identical."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from mlperf_fast.ops.rnnt_greedy import PredictionNet, rnnt_greedy_decode

BACKENDS = [
    pytest.param(("torch", "cpu", torch.float64), id="torch-cpu-fp64"),
    pytest.param(("torch", "cpu", torch.float32), id="torch-cpu-fp32"),
    pytest.param(("triton", "cpu", torch.float32), id="triton-interpreter-fp32", marks=pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter needs TRITON_INTERPRET=1")),
    pytest.param(("triton", "cuda", torch.float32), id="triton-cuda-fp32", marks=pytest.mark.cuda),
]


def make_model(seed, classes=12, emb=8, hid=16, joint=10, layers=2, blank_bias=2.0,
               dtype=torch.float32):
    torch.manual_seed(seed)
    m = torch.nn.ModuleDict(dict(
        embed=torch.nn.Embedding(classes - 1, emb),  # blank (the last class) is never embedded
        lstm=torch.nn.LSTM(emb, hid, layers),
        pred=torch.nn.Linear(hid, joint),
        out=torch.nn.Linear(joint, classes)))
    with torch.no_grad():
        m["out"].bias[-1] += blank_bias  # a blank rate like a trained model's
    return m.to(dtype)


@torch.no_grad()
def reference_decode(m, f, f_lengths, max_symbols, max_per_sample=None):
    """The reference loop: one utterance, one frame, one symbol at a time."""
    blank = m["out"].out_features - 1
    results = []
    for b in range(f.shape[0]):
        hidden = None
        label = None  # start symbol: a zero input
        out = []

        def pred(label, hidden):
            x = torch.zeros(1, 1, m["embed"].embedding_dim, dtype=f.dtype) if label is None \
                else m["embed"](torch.tensor([[label]]))
            y, hidden = m["lstm"](x, hidden)
            return m["pred"](y[0, 0]), hidden

        g, hidden_g = pred(None, None)
        for t in range(int(f_lengths[b])):
            if max_per_sample is not None and len(out) > max_per_sample:
                break
            emitted = 0
            while emitted < max_symbols:
                k = int(m["out"](F.relu(f[b, t] + g)).argmax())
                if k == blank:
                    break
                out.append(k)
                g, hidden_g = pred(k, hidden_g)
                emitted += 1
        results.append(out)
    return results


@pytest.mark.parametrize("max_symbols", [1, 3, 30])
def test_matches_reference(greedy_backend, max_symbols, rng_seed):
    backend, device, dtype = greedy_backend
    gen = torch.Generator().manual_seed(rng_seed)
    f = torch.randn(5, 9, 10, generator=gen).to(dtype) * 2
    f_lengths = torch.tensor([9, 1, 0, 5, 9])
    for blank_bias in (2.0, 0.0, -4.0):  # the first model (of this seed) that emits labels
        m = make_model(rng_seed % 1000, blank_bias=blank_bias, dtype=dtype)
        want = reference_decode(m, f, f_lengths, max_symbols)
        if any(len(x) for x in want):
            break
    net = PredictionNet.from_modules(m["embed"].to(device), m["lstm"].to(device),
                                     m["pred"].to(device), m["out"].to(device))
    got = rnnt_greedy_decode(f.to(device), f_lengths.to(device), net,
                             max_symbols_per_step=max_symbols, backend=backend)
    assert got == want
    assert any(len(x) for x in want)  # the case decodes something


@pytest.mark.parametrize("per_sample", [0, 2, 7])
def test_max_symbols_per_sample(greedy_backend, per_sample, rng_seed):
    # The reference's per-utterance cap, checked at the start of each frame.
    backend, device, dtype = greedy_backend
    gen = torch.Generator().manual_seed(rng_seed)
    f = torch.randn(4, 9, 10, generator=gen).to(dtype) * 2
    f_lengths = torch.tensor([9, 3, 0, 9])
    m = make_model(rng_seed % 1000, blank_bias=-4.0, dtype=dtype)  # emits often
    want = reference_decode(m, f, f_lengths, 3, per_sample)
    uncapped = reference_decode(m, f, f_lengths, 3)
    net = PredictionNet.from_modules(m["embed"].to(device), m["lstm"].to(device),
                                     m["pred"].to(device), m["out"].to(device))
    got = rnnt_greedy_decode(f.to(device), f_lengths.to(device), net, max_symbols_per_step=3,
                             max_symbols_per_sample=per_sample, backend=backend)
    assert got == want
    assert any(len(u) > len(w) for u, w in zip(uncapped, want))  # the cap mattered


@pytest.fixture(params=BACKENDS)
def greedy_backend(request):
    return request.param


def test_bad_input():
    m = make_model(0)
    net = PredictionNet.from_modules(m["embed"], m["lstm"], m["pred"], m["out"])
    f = torch.zeros(2, 3, 10)
    with pytest.raises(ValueError, match="f_lengths must lie"):
        rnnt_greedy_decode(f, torch.tensor([4, 1]), net)
    with pytest.raises(TypeError, match="f_lengths has dtype"):
        rnnt_greedy_decode(f, torch.tensor([1.0, 1.0]), net)
    with pytest.raises(ValueError, match="f_lengths must have shape"):
        rnnt_greedy_decode(f, torch.tensor([1, 1, 1]), net)
    with pytest.raises(ValueError, match="must match"):
        rnnt_greedy_decode(torch.zeros(2, 3, 7), torch.tensor([1, 1]), net)
    with pytest.raises(TypeError, match="embedding has dtype"):
        rnnt_greedy_decode(f.double(), torch.tensor([1, 1]), net)
    with pytest.raises(TypeError, match="blank must be an int"):
        rnnt_greedy_decode(f, torch.tensor([1, 1]), net, blank=1.5)
    meta = PredictionNet(net.embedding, net.lstm, net.pred_weight, net.pred_bias,
                         net.joint_weight.to("meta"), net.joint_bias)
    with pytest.raises(ValueError, match="joint_weight is on the meta device"):
        rnnt_greedy_decode(f, torch.tensor([1, 1]), meta)
    with pytest.raises(ValueError, match="blank=12"):
        rnnt_greedy_decode(f, torch.tensor([1, 1]), net, blank=12)
    with pytest.raises(ValueError, match="max_symbols_per_step"):
        rnnt_greedy_decode(f, torch.tensor([1, 1]), net, max_symbols_per_step=0)
    with pytest.raises(ValueError, match="max_symbols_per_sample"):
        rnnt_greedy_decode(f, torch.tensor([1, 1]), net, max_symbols_per_sample=-1)


@pytest.mark.cuda
def test_cuda_graph_and_eager_match_reference(rng_seed):
    m = make_model(rng_seed % 1000, classes=33, emb=16, hid=32, joint=24)
    gen = torch.Generator().manual_seed(rng_seed)
    f = torch.randn(40, 25, 24, generator=gen) * 2
    f_lengths = torch.randint(0, 26, (40,), generator=gen)
    want = reference_decode(m, f, f_lengths, 4)
    m = m.cuda()
    net = PredictionNet.from_modules(m["embed"], m["lstm"], m["pred"], m["out"])
    for graph in (False, True):
        got = rnnt_greedy_decode(f.cuda(), f_lengths.cuda(), net, max_symbols_per_step=4,
                                 cuda_graph=graph)
        assert got == want
