"""An SGD step (momentum 0.9, weight decay, no Nesterov) over ResNet-50's parameter set (25.6M
params, 161 tensors), fp32 and bf16 with fp32 master weights.

Baselines, same run, same tensors: torch.optim.SGD with foreach=True (torch._foreach ops, a few
kernels per step) and with fused=True (torch's fused kernel). Floor: params, grads, momentum read
once; params, momentum written once.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.optim import FusedSGD
from shapes import numel, params_with_grads, resnet50_shapes

LR, MOMENTUM, WD = 0.1, 0.9, 1e-4  # torchvision's ResNet-50 recipe


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16-master"])
def test_sgd_resnet50(measure, dtype):
    shapes = resnet50_shapes()
    n = numel(shapes)
    params = params_with_grads(shapes, dtype)
    group = f"SGD step, ResNet-50, {'fp32' if dtype == torch.float32 else 'bf16 + fp32 master'}"
    shape = f"{n:,} params in {len(shapes)} tensors"
    # fp32: p, g, buf read, p, buf written (20 B). bf16: master, buf (4 B), g (2 B) read;
    # master, buf (4 B), p (2 B) written (20 B).
    floor_bytes = n * 20
    if dtype == torch.float32:
        for impl, options in (("torch SGD(foreach=True)", {"foreach": True}),
                              ("torch SGD(fused=True)", {"fused": True})):
            opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD, **options)
            measure(group, impl, opt.step, role="baseline", shape=shape, bytes=floor_bytes)
            del opt
    for backend in ("native", "triton"):
        opt = FusedSGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD, backend=backend)
        measure(group, f"mlperf_fast {backend}", opt.step, shape=shape, bytes=floor_bytes)
        del opt
