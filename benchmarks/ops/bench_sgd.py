"""An SGD step (momentum 0.9, weight decay, no Nesterov) over ResNet-50's parameter set (25.6M
params, 161 tensors), fp32 and bf16 with fp32 master weights.

Baselines, same run, same tensors: torch.optim.SGD with foreach=True (torch._foreach ops, a few
kernels per step) and with fused=True (torch's fused kernel). Floor: params, grads, momentum read
once; params, momentum written once.
"""
from __future__ import annotations

import pytest
import torch
from shapes import resnet50_momentum_case

from mlperf_fast.optim import FusedSGD

LR, MOMENTUM, WD = 0.1, 0.9, 1e-4  # torchvision's ResNet-50 recipe


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16-master"])
def test_sgd_resnet50(measure, dtype):
    params, group, shape, floor_bytes = resnet50_momentum_case("SGD", dtype)
    if dtype == torch.float32:
        for impl, options in (("torch SGD(foreach=True)", {"foreach": True}),
                              ("torch SGD(fused=True)", {"fused": True})):
            opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD, **options)
            measure(group, impl, opt.step, role="baseline", shape=shape, bytes=floor_bytes)
            del opt
    for backend in ("native", "triton"):
        # bf16 parameters keep fp32 master weights, as the mixed-precision step that is timed
        opt = FusedSGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD, backend=backend,
                       master_weights=dtype != torch.float32)
        measure(group, f"mlperf_fast {backend}", opt.step, shape=shape, bytes=floor_bytes)
        del opt
