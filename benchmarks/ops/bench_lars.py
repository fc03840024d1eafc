"""A LARS step over ResNet-50's parameter set (25.6M params, 161 tensors; biases and batch-norm
parameters excluded from adaptation and decay), fp32 and bf16 with fp32 master weights.

Baseline: the same LARS with torch._foreach ops. Floor: params, grads, momentum read once;
params, momentum written once. Each also runs captured in a CUDA graph (capturable=True for
ours), as training loops run the step: the host's launches then drop out and the row is the
GPU's time.
"""
from __future__ import annotations

import pytest
import torch
from shapes import resnet50_momentum_case

from mlperf_fast.cuda_graphs import capture
from mlperf_fast.optim import FusedLARS

LR, MOMENTUM, WD, ETA = 2.0, 0.9, 5e-5, 0.001


def _groups(params):
    return [dict(params=[p for p in params if p.dim() > 1]),
            dict(params=[p for p in params if p.dim() <= 1], lars_exclude=True)]


class ForeachLARS:
    def __init__(self, params):
        self.adapted = [p for p in params if p.dim() > 1]
        self.excluded = [p for p in params if p.dim() <= 1]
        self.buf_a = [torch.zeros_like(p) for p in self.adapted]
        self.buf_e = [torch.zeros_like(p) for p in self.excluded]

    @torch.no_grad()
    def step(self):
        grads = [p.grad for p in self.adapted]
        pn = torch.stack(torch._foreach_norm(self.adapted))
        gn = torch.stack(torch._foreach_norm(grads))
        trust = torch.where((pn > 0) & (gn > 0), ETA * pn / (gn + WD * pn), 1.0) * LR
        d = torch._foreach_add(grads, self.adapted, alpha=WD)
        torch._foreach_mul_(d, list(trust.unbind()))
        torch._foreach_mul_(self.buf_a, MOMENTUM)
        torch._foreach_add_(self.buf_a, d)
        torch._foreach_sub_(self.adapted, self.buf_a)
        torch._foreach_mul_(self.buf_e, MOMENTUM)
        torch._foreach_add_(self.buf_e, [p.grad for p in self.excluded], alpha=LR)
        torch._foreach_sub_(self.excluded, self.buf_e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16-master"])
def test_lars_resnet50(measure, dtype):
    params, group, shape, floor_bytes = resnet50_momentum_case("LARS", dtype)
    if dtype == torch.float32:
        foreach = ForeachLARS(params)
        measure(group, "torch foreach LARS", foreach.step, role="baseline", shape=shape,
                bytes=floor_bytes)
        measure(group, "torch foreach LARS, CUDA graph", capture(foreach.step), role="baseline",
                shape=shape, bytes=floor_bytes)
        del foreach
    for backend in ("native", "triton"):
        opt = FusedLARS(_groups(params), lr=LR, momentum=MOMENTUM, weight_decay=WD,
                        trust_coefficient=ETA, backend=backend)
        measure(group, f"mlperf_fast {backend}", opt.step, shape=shape, bytes=floor_bytes)
        graphed = FusedLARS(_groups(params), lr=LR, momentum=MOMENTUM, weight_decay=WD,
                            trust_coefficient=ETA, backend=backend, capturable=True)
        measure(group, f"mlperf_fast {backend}, CUDA graph", capture(graphed.step), shape=shape,
                bytes=floor_bytes)
