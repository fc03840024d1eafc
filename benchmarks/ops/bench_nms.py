"""NMS: a batch of images in one call against torchvision's per-image loop, and one large image
against torchvision's nms / batched_nms.

Inputs look like a detector's candidates on an 800 x 800 image: boxes of 16 to 256 pixels a side
(many overlaps), uniform scores, 80 classes for the per-class form. Ours runs on both of its GPU
backends, native (CUDA) and Triton, and as `auto` picks (which must be as fast as the faster of
the two at each shape). NMS has no meaningful byte or FLOP floor (its cost is the
serial greedy walk), so no floor is given.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.nms import batched_nms, nms, nms_padded


def candidates(batch: int, n: int, classes: int = 80, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    xy = torch.rand(batch, n, 2, device="cuda", generator=gen) * 700
    wh = 16 + torch.rand(batch, n, 2, device="cuda", generator=gen) * 240
    boxes = torch.cat([xy, xy + wh], -1)
    scores = torch.rand(batch, n, device="cuda", generator=gen)
    labels = torch.randint(0, classes, (batch, n), device="cuda", generator=gen)
    return boxes, scores, labels


def test_nms_batch_of_images(measure):
    tv = pytest.importorskip("torchvision")
    batch, n = 32, 1000
    boxes, scores, labels = candidates(batch, n)
    group = "NMS, 32 images x 1,000 boxes, IoU 0.5, class-agnostic"
    shape = f"B={batch}, N={n}"

    def loop():
        return [tv.ops.nms(boxes[b], scores[b], 0.5) for b in range(batch)]

    measure(group, "torchvision nms, per-image loop", loop, role="baseline", shape=shape)
    for backend in ("native", "triton", "auto"):
        measure(group, f"mlperf_fast nms_padded {backend}",
                lambda backend=backend: nms_padded(boxes, scores, None, 0.5, backend=backend),
                shape=shape)

    group = "NMS, 32 images x 1,000 boxes, IoU 0.5, per class (80)"

    def loop_per_class():
        return [tv.ops.batched_nms(boxes[b], scores[b], labels[b], 0.5) for b in range(batch)]

    measure(group, "torchvision batched_nms, per-image loop", loop_per_class, role="baseline",
            shape=shape)
    for backend in ("native", "triton", "auto"):
        measure(group, f"mlperf_fast nms_padded {backend}",
                lambda backend=backend: nms_padded(boxes, scores, labels, 0.5, backend=backend),
                shape=shape)


@pytest.mark.parametrize("n", [1000, 5000, 20000])
def test_nms_one_image(measure, n):
    tv = pytest.importorskip("torchvision")
    boxes, scores, labels = candidates(1, n)
    boxes, scores, labels = boxes[0], scores[0], labels[0]
    shape = f"N={n:,}"
    group = f"NMS, one image, {n:,} boxes, IoU 0.5, per class (80)"
    measure(group, "torchvision batched_nms", lambda: tv.ops.batched_nms(boxes, scores, labels, 0.5),
            role="baseline", shape=shape)
    for backend in ("native", "triton", "auto"):
        measure(group, f"mlperf_fast batched_nms {backend}",
                lambda backend=backend: batched_nms(boxes, scores, labels, 0.5, backend=backend),
                shape=shape)
    group = f"NMS, one image, {n:,} boxes, IoU 0.5, class-agnostic"
    measure(group, "torchvision nms", lambda: tv.ops.nms(boxes, scores, 0.5), role="baseline",
            shape=shape)
    for backend in ("native", "triton", "auto"):
        measure(group, f"mlperf_fast nms {backend}",
                lambda backend=backend: nms(boxes, scores, 0.5, backend=backend), shape=shape)
