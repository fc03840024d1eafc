"""One ResNet-50 training step (forward, label-smoothed cross-entropy, backward, optimizer) at
a per-GPU batch of 400 images of 224 x 224 (NVIDIA's per-GPU batch on the H100), bf16.

Baseline: torchvision's resnet50 trained the way torchvision's own classification reference
trains it (references/classification/train.py with ``--amp`` and channels-last: the model in
channels-last memory format, bf16 autocast, ``torch.optim.SGD`` with momentum and weight
decay, ``CrossEntropyLoss(label_smoothing=0.1)``). Ours: the benchmark's model (model.py,
channels-last, compiled with inductor so that batch norm + ReLU (+ the residual add) run as one
kernel after each convolution), FusedLARS, through the harness's TrainStep (bf16 autocast, its
one read of the non-finite flag per step); and the same model eager, to show what compiling
buys. Inputs: normalized random images already on the GPU, rotated over 4 batches.

Floor: 3 x the forward's FLOPs (4.1 GMACs per 224-px image: 8.2 GFLOP) at the measured bf16
matrix rate. Rows report the time of one step; images/s = 400 / step time.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from mlperf_fast.harness.step import TrainStep
from mlperf_fast.optim.lars import FusedLARS, lars_param_groups
from mlperf_fast.workloads.resnet.config import CLOSED
from mlperf_fast.workloads.resnet.model import ClassificationLoss, ResNet

B = 400
SIZE = 224
ROTATE = 4
FWD_FLOPS = 2 * 4.1e9  # per image


def _batches(device: str, batch: int = B, size: int = SIZE):
    g = torch.Generator(device=device).manual_seed(0)
    return [(torch.randn(batch, 3, size, size, generator=g, device=device)
             .contiguous(memory_format=torch.channels_last),
             torch.randint(0, 1000, (batch,), generator=g, device=device))
            for _ in range(ROTATE)]


def torchvision_step(batches, device: str = "cuda"):
    import torchvision

    model = torchvision.models.resnet50().to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    nxt = itertools.cycle(batches).__next__
    model.train()

    def step():
        x, y = nxt()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = crit(model(x), y)
        loss.backward()
        opt.step()
    return model, step


def ours_step(batches, compiled: bool, device: str = "cuda"):
    model = ResNet().to(device)  # weights contiguous (FusedLARS wants them so); activations NHWC
    opt = FusedLARS(lars_param_groups(model), lr=1.0, momentum=CLOSED.momentum,
                    weight_decay=CLOSED.weight_decay, trust_coefficient=CLOSED.lars_eta)
    loss = ClassificationLoss(model, CLOSED.label_smoothing)
    if compiled:
        loss = torch.compile(loss)
    trainer = TrainStep(loss, opt, amp_dtype=torch.bfloat16, params=list(model.parameters()))
    nxt = itertools.cycle(batches).__next__
    model.train()
    return model, lambda: trainer.step([nxt()], 1)


@pytest.mark.cuda
def test_resnet50_training_step(measure):
    pytest.importorskip("torchvision")
    batches = _batches("cuda")
    flops = 3 * FWD_FLOPS * B
    shape = f"B={B}, {SIZE}x{SIZE}, bf16, channels-last"
    group = f"ResNet-50 training step, B={B} per GPU"
    model, step = torchvision_step(batches)
    measure(group, "torchvision resnet50 (bf16 autocast, channels-last, torch SGD)", step,
            role="baseline", shape=shape, flops=flops, warmup=5, repeat=20)
    del model, step
    model, step = ours_step(batches, compiled=False)
    measure(group, "mlperf_fast ResNet eager + FusedLARS", step, shape=shape, flops=flops,
            warmup=5, repeat=20)
    del model, step
    _model, step = ours_step(batches, compiled=True)
    measure(group, "mlperf_fast ResNet compiled + FusedLARS", step, shape=shape, flops=flops,
            warmup=5, repeat=20)


def smoke() -> None:
    """Each step twice on the CPU at a tiny size (tests run this: the benchmark's code works)."""
    pytest.importorskip("torchvision")
    batches = _batches("cpu", batch=2, size=64)
    for build in (lambda: torchvision_step(batches, "cpu"),
                  lambda: ours_step(batches, compiled=False, device="cpu")):
        _, step = build()
        step()
        step()
