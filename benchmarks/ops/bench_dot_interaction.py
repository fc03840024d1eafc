"""DLRM's dot interaction at the MLPerf shape: batch 65,536, 26 embeddings + the dense vector,
dim 128, fp32 and bf16.

Baseline: the MLCommons reference's formulation in torch (cat, bmm, lower-triangle gather,
cat), forward and forward + backward, same inputs, same run. Floor: inputs read and the output
written (forward); for forward + backward also the output gradient read, the inputs read again
and their gradients written.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.dot_interaction import dot_interaction, output_width

B, F, D = 65_536, 26, 128


def reference_interaction(li, lj):
    """The reference's interact_features in the inputs' dtype (bf16 bmm runs on tensor cores)."""

    def fn(x, ly):
        T = torch.cat([x.unsqueeze(1), ly], dim=1)
        Z = torch.bmm(T, T.transpose(1, 2))
        return torch.cat([x, Z[:, li, lj]], dim=1)

    return fn


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_dot_interaction_dlrm(measure, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    dense = torch.randn(B, D, device="cuda", generator=gen).to(dtype).requires_grad_(True)
    emb = torch.randn(B, F, D, device="cuda", generator=gen).to(dtype).requires_grad_(True)
    width = output_width(F, D)
    grad = torch.randn(B, width, device="cuda", generator=gen).to(dtype)
    size = dense.element_size()
    in_bytes = B * (F + 1) * D * size
    out_bytes = B * width * size
    fwd_bytes = in_bytes + out_bytes
    train_bytes = fwd_bytes + out_bytes + 2 * in_bytes
    name = str(dtype).removeprefix("torch.")
    shape = f"B={B}, F={F}, D={D}, {name}"

    def fwd(fn):
        with torch.no_grad():
            return fn(dense, emb)

    def train(fn):
        out = fn(dense, emb)
        dd, de = torch.autograd.grad(out, (dense, emb), grad)
        return dd, de

    li, lj = torch.tril_indices(F + 1, F + 1, offset=-1, device="cuda")
    baseline = reference_interaction(li, lj)
    native = lambda x, e: dot_interaction(x, e, backend="native")  # noqa: E731
    group = f"dot_interaction forward, {name}"
    measure(group, "torch bmm (reference formulation)", lambda: fwd(baseline),
            role="baseline", shape=shape, bytes=fwd_bytes)
    measure(group, "mlperf_fast native", lambda: fwd(native), shape=shape, bytes=fwd_bytes)
    group = f"dot_interaction forward+backward, {name}"
    measure(group, "torch bmm (reference formulation)", lambda: train(baseline),
            role="baseline", shape=shape, bytes=train_bytes)
    measure(group, "mlperf_fast native", lambda: train(native), shape=shape, bytes=train_bytes)
