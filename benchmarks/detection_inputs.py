"""Inputs shared by the detection benchmarks, at MLPerf RetinaNet's sizes: 800 x 800 images,
feature levels P3-P7 (strides 8 to 128) with 9 anchors per location (3 scales x 3 aspect
ratios, base size 4 x stride), 120,087 anchors in all; and padded ground-truth boxes.

Made on the GPU when a benchmark runs.
"""
from __future__ import annotations

import torch

STRIDES = (8, 16, 32, 64, 128)
FEATURE_SIZES = (100, 50, 25, 13, 7)
LEVELS = [s * s * 9 for s in FEATURE_SIZES]  # anchors per level
IMAGE_SIZE = 800


def retinanet_anchors(device: str = "cuda") -> torch.Tensor:
    """(120087, 4) float32 (x1, y1, x2, y2) anchors, level by level, location by location."""
    out = []
    for stride, size in zip(STRIDES, FEATURE_SIZES):
        c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        ctr = torch.stack([cx, cy], -1).reshape(-1, 1, 2)
        wh = torch.tensor([[4 * stride * s / r ** 0.5, 4 * stride * s * r ** 0.5]
                           for s in (1.0, 2 ** (1 / 3), 2 ** (2 / 3)) for r in (0.5, 1.0, 2.0)],
                          device=device).reshape(1, 9, 2)
        out.append(torch.cat([ctr - wh / 2, ctr + wh / 2], -1).reshape(-1, 4))
    return torch.cat(out)


def ground_truth(batch: int, max_gt: int, seed: int = 0, device: str = "cuda"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, max_gt, 4) float32 boxes of 10 to 310 pixels a side inside the image, and (batch,)
    int64 counts drawn from 1 to max_gt (the boxes past an image's count are padding)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    xy = torch.rand(batch, max_gt, 2, device=device, generator=gen) * 700
    wh = 10 + torch.rand(batch, max_gt, 2, device=device, generator=gen) * 300
    gt = torch.cat([xy, (xy + wh).clamp(max=IMAGE_SIZE)], -1)
    num = torch.randint(1, max_gt + 1, (batch,), device=device, generator=gen)
    return gt, num
