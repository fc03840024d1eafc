"""Bias + GELU on BERT-large's intermediate layer: T = 22,300 tokens (a packed batch) x
F = 4096, x bfloat16 (the GEMM's output under autocast) and a float32 bias (the parameter), tanh
GELU as the reference uses it.

Baselines: the op's torch backend (``bias_gelu_torch``: the float32 casts, the bias add, F.gelu,
the cast back, as BERT's model runs it without the kernel), and torch.compile of that function.
Ours: the Triton op. Floor: the forward reads x and writes the output (4 bytes per element);
forward + backward also reads the incoming gradient and x again and writes dx (10 bytes per
element); the bias and its row-block partial sums are under 1% of that and not counted.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.bias_gelu import bias_gelu, bias_gelu_torch

TOKENS, F = 22_300, 4096


def _inputs():
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(TOKENS, F, device="cuda", generator=gen).bfloat16()
    b = torch.randn(F, device="cuda", generator=gen) * 0.1
    return x, b


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_bias_gelu(measure, pass_):
    x, b = _inputs()
    n = x.numel()
    shape = f"{TOKENS:,} x {F} bf16, fp32 bias"
    group = f"bias gelu {pass_}, BERT-large {TOKENS:,} tokens x {F}"
    compiled = torch.compile(bias_gelu_torch)
    impls = [("eager torch (torch backend)", bias_gelu_torch, "baseline"),
             ("torch.compile (torch backend)", compiled, "baseline"),
             ("mlperf_fast triton", lambda v, c: bias_gelu(v, c, backend="triton"), "ours")]
    if pass_ == "forward":
        for name, fn, role in impls:
            measure(group, name, lambda fn=fn: fn(x, b), role=role, shape=shape, bytes=4 * n)
        return
    xg, bg = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    g = torch.randn_like(x)

    def step(fn):
        return lambda: torch.autograd.grad(fn(xg, bg), (xg, bg), g)

    for name, fn, role in impls:
        measure(group, name, step(fn), role=role, shape=shape, bytes=10 * n)
