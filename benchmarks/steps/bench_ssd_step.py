"""One SSD300-ResNet34 training step (forward, loss with hard-negative mining, backward,
optimizer) at a per-GPU batch of 128 images of 300 x 300 (the ssd_ref_1024_s128 RCP's bn span:
1,024 over 8 GPUs), bf16 autocast, the same batch for every row.

Baseline: the reference port (workloads/ssd/reference.py: SSD300 on torchvision's resnet34
trunk, NCHW, its loss with two sorts, targets as per-box xywh boxes encoded inside the loss)
with ``torch.optim.SGD(momentum=0.9, weight_decay=5e-4)``, as the reference's train.py steps it.
Ours: the benchmark's model (model.py: channels-last, heads read without a transpose, one sort
for the hard negatives, targets encoded in the loader), FusedSGD, through the harness's
TrainStep (bf16 autocast, its one read of the non-finite flag per step), eager and compiled.
Inputs: normalized random images with 1-12 random boxes each, encoded once for each model.

Floor: 3 x the forward's FLOPs (counted by torch.utils.flop_counter on one image) at the
measured bf16 matrix rate. Rows report the time of one step; images/s = 128 / step time.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from mlperf_fast.harness.step import TrainStep
from mlperf_fast.optim.sgd import FusedSGD
from mlperf_fast.workloads.ssd import boxes as B
from mlperf_fast.workloads.ssd import reference as R
from mlperf_fast.workloads.ssd.config import CLOSED
from mlperf_fast.workloads.ssd.model import SSD, DetectionLoss

BATCH = 128
SIZE = 300
ROTATE = 2
LR = CLOSED.base_lr


def _gt(g: torch.Generator, batch: int, num_classes: int):
    out = []
    for _ in range(batch):
        n = int(torch.randint(1, 13, (), generator=g))
        xy = torch.rand(n, 2, generator=g) * 0.7
        wh = torch.rand(n, 2, generator=g) * 0.4 + 0.03
        out.append((torch.cat([xy, (xy + wh).clamp(max=1)], 1),
                    torch.randint(1, num_classes, (n,), generator=g)))
    return out


def _batches(device: str, batch: int = BATCH, size: int = SIZE, rotate: int = ROTATE,
             cfg=CLOSED):
    """[(images, (ref_gloc (b, 4, A) xywh, ref_glabel (b, A)), (gloc (b, A, 4), glabel))]."""
    g = torch.Generator().manual_seed(0)
    d_ref = R.ReferenceDefaultBoxes(cfg.image_size, list(cfg.feat_sizes), list(cfg.steps),
                                    list(cfg.scales), [list(a) for a in cfg.aspect_ratios])
    enc = R.ReferenceEncoder(d_ref)
    d = B.default_boxes(cfg.image_size, cfg.feat_sizes, cfg.steps, cfg.scales, cfg.aspect_ratios)
    out = []
    for _ in range(rotate):
        gts = _gt(g, batch, cfg.num_classes)
        ref = [enc.encode(b, lab) for b, lab in gts]
        ours = [B.encode(b, lab, d) for b, lab in gts]
        images = torch.randn(batch, 3, size, size, generator=g)
        out.append((images.to(device),
                    (torch.stack([r[0] for r in ref]).transpose(1, 2).contiguous().to(device),
                     torch.stack([r[1] for r in ref]).to(device)),
                    (torch.stack([o[0] for o in ours]).to(device),
                     torch.stack([o[1] for o in ours]).to(device))))
    return out, d_ref


def reference_step(batches, d_ref, device: str = "cuda", num_classes: int = CLOSED.num_classes,
                   model: torch.nn.Module | None = None):
    model = (model if model is not None else R.SSD300(num_classes)).to(device)
    loss_fn = R.ReferenceLoss(d_ref).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=CLOSED.momentum,
                          weight_decay=CLOSED.weight_decay)
    nxt = itertools.cycle(batches).__next__
    model.train()

    def step():
        x, (gloc, glabel), _ = nxt()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            ploc, plabel = model(x)
            loss = loss_fn(ploc.float(), plabel.float(), gloc, glabel)
        loss.backward()
        opt.step()
    return model, step


def ours_step(batches, compiled: bool, device: str = "cuda", cfg=CLOSED):
    model = SSD(cfg.num_classes, cfg.blocks, cfg.widths, cfg.stem, cfg.extras,
                cfg.num_defaults).to(device)
    opt = FusedSGD(model.parameters(), lr=LR, momentum=cfg.momentum,
                   weight_decay=cfg.weight_decay)
    loss = DetectionLoss(model, cfg.neg_ratio)
    if compiled:
        loss = torch.compile(loss)
    trainer = TrainStep(loss, opt, amp_dtype=torch.bfloat16, params=list(model.parameters()))
    nxt = itertools.cycle(batches).__next__
    model.train()

    def step():
        x, _, (gloc, glabel) = nxt()
        trainer.step([(x, gloc, glabel)], 1)
    return model, step


def forward_flops(device: str, cfg=CLOSED) -> float:
    """FLOPs of one image's forward (torch.utils.flop_counter), 300 x 300 for SSD300."""
    from torch.utils.flop_counter import FlopCounterMode

    model = SSD(cfg.num_classes, cfg.blocks, cfg.widths, cfg.stem, cfg.extras,
                cfg.num_defaults).to(device).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, cfg.image_size, cfg.image_size, device=device))
    return float(counter.get_total_flops())


@pytest.mark.cuda
def test_ssd300_training_step(measure):
    pytest.importorskip("torchvision")
    batches, d_ref = _batches("cuda")
    flops = 3 * forward_flops("cuda") * BATCH
    shape = f"B={BATCH}, {SIZE}x{SIZE}, 8732 boxes, 81 classes, bf16"
    group = f"SSD300-ResNet34 training step, B={BATCH} per GPU"
    model, step = reference_step(batches, d_ref)
    measure(group, "reference port (NCHW, bf16 autocast, torch SGD)", step, role="baseline",
            shape=shape, flops=flops, warmup=5, repeat=20)
    del model, step
    model, step = ours_step(batches, compiled=False)
    measure(group, "mlperf_fast SSD eager + FusedSGD", step, shape=shape, flops=flops,
            warmup=5, repeat=20)
    del model, step
    _model, step = ours_step(batches, compiled=True)
    measure(group, "mlperf_fast SSD compiled + FusedSGD", step, shape=shape, flops=flops,
            warmup=5, repeat=20)


def smoke() -> None:
    """Both steps twice on the CPU at a tiny size (tests run this: the benchmark's code works):
    the embedded geometry, batch 2."""
    pytest.importorskip("torchvision")
    from mlperf_fast.workloads.ssd.config import EMBEDDED as cfg
    from mlperf_fast.workloads.ssd.model import Trunk

    batches, d_ref = _batches("cpu", batch=2, size=cfg.image_size, cfg=cfg)
    trunk = Trunk(cfg.blocks, cfg.widths, cfg.stem)

    ref = R.SSD300(cfg.num_classes, trunk=R.FeatureList(trunk), trunk_channels=cfg.widths[-1],
                   extras=cfg.extras, num_defaults=cfg.num_defaults)
    for build in (lambda: reference_step(batches, d_ref, "cpu", cfg.num_classes, model=ref),
                  lambda: ours_step(batches, compiled=False, device="cpu", cfg=cfg)):
        _, step = build()
        step()
        step()
    assert forward_flops("cpu", cfg) > 1e7
