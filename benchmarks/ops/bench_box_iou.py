"""The IoU matrix of one image's 50 ground-truth boxes against MLPerf RetinaNet's 120,087 anchors
(the first step of anchor matching, bench_match_boxes.py), float32.

Baseline, same inputs, same run: torchvision's box_iou. Floor: the (G, A) float32 output
written once (the boxes themselves are a few MB, read from L2).
"""
from __future__ import annotations

import pytest
from detection_inputs import ground_truth, retinanet_anchors

from mlperf_fast.ops.box_iou import box_iou


def test_box_iou(measure):
    tv = pytest.importorskip("torchvision")
    anchors = retinanet_anchors()
    gt = ground_truth(32, 50)[0][0]
    group = "IoU matrix, 50 x 120,087 boxes, fp32"
    shape = f"{gt.shape[0]} x {anchors.shape[0]:,}"
    nbytes = gt.shape[0] * anchors.shape[0] * 4
    measure(group, "torchvision box_iou", lambda: tv.ops.box_iou(gt, anchors), role="baseline",
            shape=shape, bytes=nbytes)
    measure(group, "mlperf_fast box_iou triton", lambda: box_iou(gt, anchors, backend="triton"),
            shape=shape, bytes=nbytes)
