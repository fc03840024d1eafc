"""RetinaNet evaluation post-processing for a batch of 32 (MLPerf RetinaNet: 800 x 800 images,
five levels P3-P7 with 9 anchors per location = 120,087 anchors, 264 classes; score threshold
0.05, 1,000 candidates per level, NMS 0.5 per class, 300 detections per image).

Baseline: the reference's per-image, per-level loop on torchvision (BoxCoder.decode_single,
clip_boxes_to_image, batched_nms), as in torchvision's RetinaNet.postprocess_detections. Ours:
mlperf_fast.ops.retinanet_postprocess, one batched call. Floor: the logits read once.
Logits are drawn around -6 (a trained detector's background), so about 2% of the
(anchor, class) pairs pass the score threshold.
"""
from __future__ import annotations

import pytest
import torch
from detection_inputs import LEVELS, retinanet_anchors

from mlperf_fast.ops.retinanet_postprocess import retinanet_postprocess

CLASSES = 264
BATCH = 32


def _torchvision_loop(tv, cls_logits, bbox_regression, anchors, image_shapes):
    from torchvision.models.detection._utils import BoxCoder

    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    logits_levels = list(cls_logits.split(LEVELS, dim=1))
    codes_levels = list(bbox_regression.split(LEVELS, dim=1))
    anchor_levels = list(anchors.split(LEVELS))
    detections = []
    for b in range(cls_logits.shape[0]):
        boxes_all, scores_all, labels_all = [], [], []
        for logits, codes, anc in zip(logits_levels, codes_levels, anchor_levels):
            scores = torch.sigmoid(logits[b]).flatten()
            keep = scores > 0.05
            scores = scores[keep]
            idxs = torch.where(keep)[0]
            scores, order = scores.topk(min(1000, idxs.numel()))
            idxs = idxs[order]
            anchor_idx = torch.div(idxs, CLASSES, rounding_mode="floor")
            labels = idxs % CLASSES
            boxes = coder.decode_single(codes[b][anchor_idx], anc[anchor_idx])
            boxes = tv.ops.clip_boxes_to_image(boxes, image_shapes[b])
            boxes_all.append(boxes)
            scores_all.append(scores)
            labels_all.append(labels)
        boxes = torch.cat(boxes_all)
        scores = torch.cat(scores_all)
        labels = torch.cat(labels_all)
        keep = tv.ops.batched_nms(boxes, scores, labels, 0.5)[:300]
        detections.append((boxes[keep], scores[keep], labels[keep]))
    return detections


def test_retinanet_postprocess(measure):
    tv = pytest.importorskip("torchvision")
    anchors = retinanet_anchors()
    a = anchors.shape[0]
    gen = torch.Generator(device="cuda").manual_seed(0)
    cls_logits = torch.randn(BATCH, a, CLASSES, device="cuda", generator=gen) * 1.5 - 6
    bbox_regression = torch.randn(BATCH, a, 4, device="cuda", generator=gen) * 0.2
    image_shapes = [(800, 800)] * BATCH
    sizes = torch.tensor(image_shapes, device="cuda")
    group = "RetinaNet post-processing, batch 32 (120,087 anchors x 264 classes)"
    shape = f"B={BATCH}, A={a:,}, C={CLASSES}, fp32 logits"
    nbytes = cls_logits.numel() * 4
    measure(group, "torchvision per-image loop",
            lambda: _torchvision_loop(tv, cls_logits, bbox_regression, anchors, image_shapes),
            role="baseline", shape=shape, bytes=nbytes, warmup=1, repeat=5, min_time_s=0.0)
    measure(group, "mlperf_fast retinanet_postprocess",
            lambda: retinanet_postprocess(cls_logits, bbox_regression, anchors, sizes, LEVELS),
            shape=shape, bytes=nbytes)
