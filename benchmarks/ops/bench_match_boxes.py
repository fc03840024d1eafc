"""Anchor matching for a RetinaNet training step: 32 images, up to 50 ground-truth boxes each
(padded; counts drawn from 1 to 50), 120,087 anchors (MLPerf RetinaNet, 800 x 800).

Baseline: what the reference does per image, torchvision's box_iou then Matcher(0.5, 0.4,
allow_low_quality_matches=True). Ours: match_boxes for the whole batch, no IoU matrix (the IoU
matrix alone: bench_box_iou.py).
"""
from __future__ import annotations

import pytest
from detection_inputs import ground_truth, retinanet_anchors

from mlperf_fast.ops.match_boxes import match_boxes

BATCH, MAX_GT = 32, 50


def test_match_boxes(measure):
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    anchors = retinanet_anchors()
    gt, num = ground_truth(BATCH, MAX_GT)
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
