"""Anchor matching for a RetinaNet training step: 32 images, up to 50 ground-truth boxes each
(padded; counts drawn from 1 to 50), 120,087 anchors (MLPerf RetinaNet, 800 x 800).

Baseline: what the reference does per image, torchvision's box_iou then Matcher(0.5, 0.4,
allow_low_quality_matches=True). Ours: match_boxes for the whole batch, no IoU matrix. Floor for
the IoU matrix alone: the (G, A) float32 output written once.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.box_iou import box_iou
from mlperf_fast.ops.match_boxes import match_boxes

BATCH, MAX_GT = 32, 50


def _anchors():
    out = []
    for stride, size in zip((8, 16, 32, 64, 128), (100, 50, 25, 13, 7)):
        c = (torch.arange(size, device="cuda", dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        ctr = torch.stack([cx, cy], -1).reshape(-1, 1, 2)
        wh = torch.tensor([[4 * stride * s / r ** 0.5, 4 * stride * s * r ** 0.5]
                           for s in (1.0, 2 ** (1 / 3), 2 ** (2 / 3)) for r in (0.5, 1.0, 2.0)],
                          device="cuda").reshape(1, 9, 2)
        out.append(torch.cat([ctr - wh / 2, ctr + wh / 2], -1).reshape(-1, 4))
    return torch.cat(out)


def _ground_truth():
    gen = torch.Generator(device="cuda").manual_seed(0)
    xy = torch.rand(BATCH, MAX_GT, 2, device="cuda", generator=gen) * 700
    wh = 10 + torch.rand(BATCH, MAX_GT, 2, device="cuda", generator=gen) * 300
    gt = torch.cat([xy, (xy + wh).clamp(max=800)], -1)
    num = torch.randint(1, MAX_GT + 1, (BATCH,), device="cuda", generator=gen)
    return gt, num


def test_match_boxes(measure):
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    anchors = _anchors()
    gt, num = _ground_truth()
    counts = num.tolist()
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    group = "anchor matching, RetinaNet batch 32 (<= 50 gt x 120,087 anchors)"
    shape = f"B={BATCH}, G<={MAX_GT}, A={anchors.shape[0]:,}"

    def loop():
        return [matcher(tv.ops.box_iou(gt[b, :counts[b]], anchors)) for b in range(BATCH)]

    measure(group, "torchvision box_iou + Matcher, per-image loop", loop, role="baseline",
            shape=shape)
    measure(group, "mlperf_fast match_boxes triton",
            lambda: match_boxes(gt, anchors, num, 0.5, 0.4, True, backend="triton"), shape=shape)


def test_box_iou(measure):
    tv = pytest.importorskip("torchvision")
    anchors = _anchors()
    gt = _ground_truth()[0][0]
    group = "IoU matrix, 50 x 120,087 boxes, fp32"
    shape = f"{gt.shape[0]} x {anchors.shape[0]:,}"
    nbytes = gt.shape[0] * anchors.shape[0] * 4
    measure(group, "torchvision box_iou", lambda: tv.ops.box_iou(gt, anchors), role="baseline",
            shape=shape, bytes=nbytes)
    measure(group, "mlperf_fast box_iou triton", lambda: box_iou(gt, anchors, backend="triton"),
            shape=shape, bytes=nbytes)
