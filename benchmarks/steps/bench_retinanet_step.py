"""One RetinaNet training step (forward, the focal and L1 losses, backward, Adam) of the closed
model (ResNeXt50-32x4d FPN, P3-P7, 264 classes, 120,087 anchors) at a per-GPU batch of 32
images of 800 x 800 (the reference's 8 x 32 configuration), bf16 autocast, the last three
backbone stages trainable as with ImageNet weights.

Baseline: reference.py's port of the MLCommons model, run as the reference's train.py runs it
(channels-last model, ``torch.autocast``, ``torch.optim.Adam``): its loss loops over the images
(match, boolean indexing, focal loss, L1), as the reference does. Ours: model.py (the batched
loss on match_boxes and the fused sigmoid_focal_loss, frozen batch norm folded into the
convolutions, channels-last) with FusedAdam through the harness's TrainStep. Both on the same
batch (normalized random images and 1 to 20 random boxes per image, rotated over 4 batches), in
the same run.

Floor: 3 x the forward's FLOPs at the measured bf16 matrix rate (the forward counted by
torch.utils.flop_counter on the reference model at batch 1).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from mlperf_fast.harness.step import TrainStep
from mlperf_fast.optim.adam import FusedAdam
from mlperf_fast.workloads.retinanet.config import CLOSED
from mlperf_fast.workloads.retinanet.model import RetinaNet
from mlperf_fast.workloads.retinanet.reference import ReferenceRetinaNet, freeze_layers

B = 32
SIZE = 800
MAX_GT = 20
ROTATE = 4


def _batches(device: str, cfg=CLOSED, batch: int = B, rotate: int = ROTATE):
    """(images, boxes, labels, counts) on ``device``: images (batch, 3, H, W) channels-last,
    boxes (batch, MAX_GT, 4) padded with counts (batch,) of 1..MAX_GT."""
    g = torch.Generator(device=device).manual_seed(0)
    h, w = cfg.image_size
    out = []
    for _ in range(rotate):
        x = torch.randn(batch, 3, h, w, generator=g, device=device).contiguous(
            memory_format=torch.channels_last)
        xy = torch.rand(batch, MAX_GT, 2, generator=g, device=device) * torch.tensor(
            [w * 0.8, h * 0.8], device=device)
        wh = 4 + torch.rand(batch, MAX_GT, 2, generator=g, device=device) * torch.tensor(
            [w * 0.4, h * 0.4], device=device)
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w, h], device=device))], -1)
        labels = torch.randint(0, cfg.num_classes, (batch, MAX_GT), generator=g, device=device)
        counts = torch.randint(1, MAX_GT + 1, (batch,), generator=g, device=device)
        out.append((x, boxes, labels, counts))
    return out


def _as_lists(batch):
    """The padded targets as the reference's list of per-image dicts."""
    x, boxes, labels, counts = batch
    return x, [{"boxes": boxes[i, :int(c)], "labels": labels[i, :int(c)]}
               for i, c in enumerate(counts.tolist())]


def reference_step(batches, cfg=CLOSED, device: str = "cuda", amp: bool = True):
    model = ReferenceRetinaNet(cfg)
    freeze_layers(model.backbone.body, 3)  # as with the ImageNet backbone: layer2-4 train
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    lists = [_as_lists(b) for b in batches]  # made once: the reference's loader yields lists
    nxt = itertools.cycle(lists).__next__
    model.train()

    def step():
        x, targets = nxt()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            losses = model(x, targets)
            loss = sum(losses.values())
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, step


def ours_step(batches, cfg=CLOSED, device: str = "cuda", amp: bool = True):
    model = RetinaNet(cfg)
    freeze_layers(model.backbone.body, 3)
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = FusedAdam(params, lr=cfg.lr, adam_w_mode=False)
    trainer = TrainStep(model, opt, amp_dtype=torch.bfloat16 if amp else None, params=params)
    nxt = itertools.cycle(batches).__next__
    model.train()
    return model, lambda: trainer.step([nxt()], 1)


def forward_flops(cfg=CLOSED, device: str = "cuda") -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = ReferenceRetinaNet(cfg).to(device).eval()
    x = torch.zeros(1, 3, *cfg.image_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.head(model.backbone(x))
    return float(counter.get_total_flops())


@pytest.mark.cuda
def test_retinanet_training_step(measure):
    pytest.importorskip("torchvision")
    batches = _batches("cuda")
    flops = 3 * forward_flops() * B
    shape = f"B={B}, {SIZE}x{SIZE}, 264 classes, bf16, channels-last"
    group = f"RetinaNet training step, B={B} per GPU"
    model, step = reference_step(batches)
    measure(group, "MLCommons reference port (bf16 autocast, per-image loss, torch Adam)", step,
            role="baseline", shape=shape, flops=flops, warmup=3, repeat=10)
    del model, step
    torch.cuda.empty_cache()
    _model, step = ours_step(batches)
    measure(group, "mlperf_fast RetinaNet (batched fused loss, folded frozen BN) + FusedAdam",
            step, shape=shape, flops=flops, warmup=3, repeat=10)


SMOKE = CLOSED.replace(blocks=(1, 1, 1, 1), planes=(16, 32, 64, 128), stem=16, fpn_channels=32,
                       num_classes=7, image_size=(64, 64))


def smoke() -> None:
    """Each step once on the CPU at a tiny size (tests run this: the benchmark's code works)."""
    pytest.importorskip("torchvision")
    batches = _batches("cpu", SMOKE, batch=2, rotate=2)
    for build in (reference_step, ours_step):
        model, step = build(batches, SMOKE, "cpu", amp=False)
        before = model.head.regression_head.bbox_reg.weight.detach().clone()
        step()
        assert not torch.equal(before, model.head.regression_head.bbox_reg.weight)
    assert forward_flops(SMOKE, "cpu") > 0
