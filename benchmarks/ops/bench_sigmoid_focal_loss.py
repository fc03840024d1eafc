"""Sigmoid focal loss on RetinaNet's classification output: 8 images x 120,087 anchors x 264
classes (MLPerf RetinaNet, 800 x 800 inputs), reduction "sum" as the reference uses it.

Baseline: torchvision.ops.sigmoid_focal_loss (its formula in plain PyTorch if torchvision is
absent). Floor: forward reads logits and targets (8 bytes per element in float32); forward +
backward also reads them again and writes the gradient (20 bytes per element).
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.sigmoid_focal_loss import sigmoid_focal_loss, sigmoid_focal_loss_torch

SHAPE = (8 * 120_087, 264)


def _baseline():
    try:
        import torchvision

        return "torchvision sigmoid_focal_loss", torchvision.ops.sigmoid_focal_loss
    except ImportError:
        return "torch (torchvision's formula)", sigmoid_focal_loss_torch


def _inputs():
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(SHAPE, device="cuda", generator=gen) * 2 - 4
    t = (torch.rand(SHAPE, device="cuda", generator=gen) < 0.002).float()
    return x, t


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_sigmoid_focal_loss(measure, pass_):
    name, base = _baseline()
    x, t = _inputs()
    n = x.numel()
    shape = f"{SHAPE[0]:,} x {SHAPE[1]} fp32"
    group = f"sigmoid focal loss {pass_}, RetinaNet 8 x 120,087 anchors x 264 classes"
    if pass_ == "forward":
        nbytes = 8 * n
        measure(group, name, lambda: base(x, t, 0.25, 2.0, "sum"), role="baseline", shape=shape,
                bytes=nbytes)
        measure(group, "mlperf_fast triton",
                lambda: sigmoid_focal_loss(x, t, 0.25, 2.0, "sum", backend="triton"),
                shape=shape, bytes=nbytes)
        return
    xg = x.requires_grad_(True)
    nbytes = 20 * n

    def step(fn):
        return lambda: torch.autograd.grad(fn(xg), xg)

    measure(group, name, step(lambda v: base(v, t, 0.25, 2.0, "sum")), role="baseline",
            shape=shape, bytes=nbytes)
    measure(group, "mlperf_fast triton",
            step(lambda v: sigmoid_focal_loss(v, t, 0.25, 2.0, "sum", backend="triton")),
            shape=shape, bytes=nbytes)
