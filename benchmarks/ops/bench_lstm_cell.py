"""LSTM forward + backward on the RNN-T shapes: the prediction network and the encoder.

Prediction network (2 layers, hidden 512, input 512, batch 192, U+1 = 81 steps): baselines are a
step-by-step PyTorch loop (the cell written with torch ops, what a custom LSTM in Python does)
and cuDNN (torch.nn.LSTM). Encoder (2 layers, hidden 1024, input 1024, T=400, batch 128, bf16):
baseline cuDNN. Ours: mlperf_fast.nn.LSTM(impl="fused"), eagerly and captured whole in a CUDA
graph (torch.cuda.make_graphed_callables), which removes the per-step launch cost. These rows set
FUSED_MAX_STEPS in mlperf_fast/nn/lstm.py. Floor: the GEMMs (forward, and the two gradients) at
the measured bf16 matmul rate.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.nn import LSTM


def _loop_lstm(ref: torch.nn.LSTM):
    """nn.LSTM's math as a per-step Python loop over torch ops."""
    def run(x):
        h_all = x
        for k in range(ref.num_layers):
            w_ih, w_hh = getattr(ref, f"weight_ih_l{k}"), getattr(ref, f"weight_hh_l{k}")
            b = getattr(ref, f"bias_ih_l{k}") + getattr(ref, f"bias_hh_l{k}")
            h = x.new_zeros(x.shape[1], ref.hidden_size)
            c = torch.zeros_like(h)
            outs = []
            for t in range(h_all.shape[0]):
                gates = h_all[t] @ w_ih.t() + h @ w_hh.t() + b
                i, f, g, o = gates.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            h_all = torch.stack(outs)
        return h_all
    return run


def _step(fn, x, params):
    def run():
        x.grad = None
        for p in params:
            p.grad = None
        fn(x).sum().backward()
    return run


def _graphed(module, x):
    graphed = torch.cuda.make_graphed_callables(module, (x,))
    return lambda inp: graphed(inp)[0]


def _case(layers, inp, hid, steps, bsz, dtype):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(inp, hid, layers).cuda().to(dtype)
    ours = LSTM(inp, hid, layers, impl="fused").cuda().to(dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(steps, bsz, inp, device="cuda", dtype=dtype, requires_grad=True)
    flops = 3 * 2 * steps * bsz * 4 * hid * (inp + hid) * layers
    return ref, ours, x, flops


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_prediction_network(measure, dtype):
    ref, ours, x, flops = _case(2, 512, 512, 81, 192, dtype)
    name = str(dtype).removeprefix("torch.")
    group = f"LSTM fwd+bwd, RNN-T prediction network, {name}"
    shape = "2 layers, I=H=512, U+1=81, B=192"
    rp, op = list(ref.parameters()), list(ours.parameters())
    measure(group, "PyTorch step loop", _step(_loop_lstm(ref), x, rp), role="baseline",
            shape=shape, flops=flops)
    measure(group, "cuDNN nn.LSTM", _step(lambda i: ref(i)[0], x, rp), role="baseline",
            shape=shape, flops=flops)
    measure(group, "mlperf_fast fused", _step(lambda i: ours(i)[0], x, op), shape=shape,
            flops=flops)
    measure(group, "mlperf_fast fused, CUDA graph", _step(_graphed(ours, x), x, op), shape=shape,
            flops=flops)


def test_encoder(measure):
    ref, ours, x, flops = _case(2, 1024, 1024, 400, 128, torch.bfloat16)
    group = "LSTM fwd+bwd, RNN-T encoder, bf16"
    shape = "2 layers, I=H=1024, T=400, B=128"
    rp, op = list(ref.parameters()), list(ours.parameters())
    measure(group, "cuDNN nn.LSTM", _step(lambda i: ref(i)[0], x, rp), role="baseline",
            shape=shape, flops=flops)
    measure(group, "mlperf_fast fused", _step(lambda i: ours(i)[0], x, op), shape=shape,
            flops=flops)
    measure(group, "mlperf_fast fused, CUDA graph", _step(_graphed(ours, x), x, op), shape=shape,
            flops=flops)
