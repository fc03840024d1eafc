"""Bias + dropout + residual + LayerNorm on BERT-large's hidden layers: T = 22,300 tokens (a
packed batch) x H = 1024, x and the residual bfloat16 (the activations under autocast), the
bias and LayerNorm parameters float32, p = 0.1 in training, eps = 1e-12, as the reference runs
it.

Baselines: the op's torch backend (``bias_dropout_add_layer_norm_torch``, the eager formula
BERT's model runs without the kernels), and torch.compile of that same function. Ours: the
Triton op (its dropout mask drawn in the kernels, never stored). Floor: the forward reads x and
the residual and writes the output (6 bytes per element); forward + backward also reads the
incoming gradient, x and the residual again and writes the gradients of x and of the residual
(16 bytes per element); the per-row statistics and the (H,) vectors and their partial sums are under 1% and not counted.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.bias_dropout_add_layer_norm import (
    bias_dropout_add_layer_norm,
    bias_dropout_add_layer_norm_torch,
)

TOKENS, H = 22_300, 1024
P, EPS = 0.1, 1e-12


def _inputs():
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(TOKENS, H, device="cuda", generator=gen).bfloat16()
    residual = torch.randn(TOKENS, H, device="cuda", generator=gen).bfloat16()
    bias, weight, ln_bias = (torch.randn(H, device="cuda", generator=gen) for _ in range(3))
    return x, bias, residual, weight, ln_bias


def _ours(x, b, r, w, lb):
    return bias_dropout_add_layer_norm(x, b, r, w, lb, P, True, EPS, backend="triton")


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_bias_dropout_add_layer_norm(measure, pass_):
    args = _inputs()
    n = args[0].numel()
    shape = f"{TOKENS:,} x {H} bf16, fp32 params, p={P}"
    group = f"bias dropout add layernorm {pass_}, BERT-large {TOKENS:,} tokens x {H}"

    def model_fn(x, b, r, w, lb):
        return bias_dropout_add_layer_norm_torch(x, b, r, w, lb, P, True, EPS)

    impls = [("eager torch (torch backend)", model_fn, "baseline"),
             ("torch.compile (torch backend)", torch.compile(model_fn), "baseline"),
             ("mlperf_fast triton", _ours, "ours")]
    if pass_ == "forward":
        for name, fn, role in impls:
            measure(group, name, lambda fn=fn: fn(*args), role=role, shape=shape, bytes=6 * n)
        return
    leaves = [a.clone().requires_grad_(True) for a in args]
    g = torch.randn_like(args[0])

    def step(fn):
        return lambda: torch.autograd.grad(fn(*leaves), leaves, g)

    for name, fn, role in impls:
        measure(group, name, step(fn), role=role, shape=shape, bytes=16 * n)
