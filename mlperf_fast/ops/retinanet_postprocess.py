"""RetinaNet's detection post-processing for a whole batch at once: classification logits, box
regression and anchors to the final per-image detections.

The MLCommons reference (torchvision's RetinaNet.postprocess_detections) loops over images and,
inside, over pyramid levels: sigmoid over every score, a threshold, a nonzero (a host sync),
top-k, box decoding, clipping, concatenation and batched_nms, about a hundred small launches and
five syncs per image. Here every step covers the whole batch: per level one top-k over the raw
logits of all images (sigmoid is monotonic, so the top-k of the logits are the top-k of the
scores and the sigmoid runs on the candidates only), one fused decode + clip over every
candidate, and one padded NMS launch pair for all images. No host synchronization.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops.box_decode import DEFAULT_CLAMP, box_decode
from mlperf_fast.ops.nms import Detections, nms_padded


def retinanet_postprocess(cls_logits: torch.Tensor, bbox_regression: torch.Tensor,
                          anchors: torch.Tensor, image_sizes: torch.Tensor,
                          level_sizes: Sequence[int] | None = None, *, score_thresh: float = 0.05,
                          nms_thresh: float = 0.5, detections_per_img: int = 300,
                          topk_candidates: int = 1000,
                          weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                          bbox_xform_clip: float = DEFAULT_CLAMP,
                          backend: str = "auto") -> Detections:
    """Final detections of a batch, as RetinaNet.postprocess_detections computes them.

    Per image and per pyramid level: the ``topk_candidates`` highest-scoring (anchor, class)
    pairs whose score sigmoid(logit) is above ``score_thresh``; their boxes decoded from the
    anchors and clipped to the image; then NMS within each class at ``nms_thresh`` over all
    levels' candidates, keeping the ``detections_per_img`` highest-scoring.

    Args:
        cls_logits: (B, A, C) classification logits, anchors in level order.
        bbox_regression: (B, A, 4) box deltas.
        anchors: (A, 4) anchors shared by the batch, or (B, A, 4), (x1, y1, x2, y2).
        image_sizes: (B, 2) (height, width) of each image (boxes are clipped to it).
        level_sizes: anchors per pyramid level, summing to A (None: one level).
        score_thresh, nms_thresh, detections_per_img, topk_candidates: as in torchvision's
            RetinaNet (MLPerf: 0.05, 0.5, 300, 1000).
        weights, bbox_xform_clip: the box coder's (RetinaNet: (1, 1, 1, 1), log(1000 / 16)).
        backend: for the decode and NMS steps ("auto", "triton"/"native" as each op has, "torch").

    Returns:
        :class:`~mlperf_fast.ops.nms.Detections` with K = detections_per_img slots per image
        (fewer if there are fewer candidates); ``labels`` are class indices in [0, C) and
        ``indices`` the anchor index of each detection.
    """
    for name, t in (("cls_logits", cls_logits), ("bbox_regression", bbox_regression),
                    ("anchors", anchors)):
        _checks.float_tensor(t, name)
        _checks.same_device(t, name, cls_logits, "cls_logits")
    _checks.tensor(image_sizes, "image_sizes")
    _checks.same_device(image_sizes, "image_sizes", cls_logits, "cls_logits")
    if cls_logits.dim() != 3:
        raise _checks.ArgumentValueError(f"cls_logits must have shape (B, A, C), got "
                                         f"{tuple(cls_logits.shape)}")
    batch, num_anchors, num_classes = cls_logits.shape
    _checks.shape(bbox_regression, "bbox_regression", (batch, num_anchors, 4))
    if anchors.shape not in ((num_anchors, 4), (batch, num_anchors, 4)):
        raise _checks.ArgumentValueError(
            f"anchors must have shape {(num_anchors, 4)} or {(batch, num_anchors, 4)}, got "
            f"{tuple(anchors.shape)}")
    _checks.shape(image_sizes, "image_sizes", (batch, 2))
    if level_sizes is not None and (isinstance(level_sizes, torch.Tensor) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in level_sizes)):
        raise _checks.ArgumentTypeError("level_sizes must be a sequence of ints or None")
    sizes = [num_anchors] if level_sizes is None else [int(s) for s in level_sizes]
    if any(s < 0 for s in sizes) or sum(sizes) != num_anchors:
        raise _checks.ArgumentValueError(f"level_sizes must be non-negative and sum to "
                                         f"{num_anchors} anchors, got {list(sizes)}")
    detections_per_img = _checks.integer(detections_per_img, "detections_per_img", lo=1)
    topk_candidates = _checks.integer(topk_candidates, "topk_candidates", lo=1)
    score_thresh = _checks.real(score_thresh, "score_thresh")
    nms_thresh = _checks.real(nms_thresh, "nms_thresh")

    # Per level, one top-k over all images' logits; flat indices count (anchor, class) pairs
    # from the start of the image.
    logits, flat = [], []
    start = 0
    for size in sizes:
        k = min(topk_candidates, size * num_classes)
        if k > 0:
            level = cls_logits[:, start:start + size].reshape(batch, size * num_classes)
            values, index = level.topk(k, dim=1)
            logits.append(values)
            flat.append(index + start * num_classes)
        start += size
    if not logits:
        empty = cls_logits.new_empty(batch, 0)
        logits, flat = [empty], [empty.long()]
    logits = torch.cat(logits, 1)
    flat = torch.cat(flat, 1)
    scores = torch.sigmoid(logits)
    anchor_index = torch.div(flat, num_classes, rounding_mode="floor")
    labels = flat - anchor_index * num_classes
    m = anchor_index.shape[1]
    codes = bbox_regression.gather(1, anchor_index.unsqueeze(-1).expand(batch, m, 4))
    if anchors.dim() == 2:
        picked = anchors[anchor_index]
    else:
        picked = anchors.gather(1, anchor_index.unsqueeze(-1).expand(batch, m, 4))
    # Each step on the backend asked for where it has one (decode: Triton; NMS: native).
    boxes = box_decode(codes, picked, weights, bbox_xform_clip, image_sizes,
                       backend="auto" if backend == "native" else backend)
    det = nms_padded(boxes, scores, labels, nms_thresh, score_thresh, None, detections_per_img,
                     backend="auto" if backend == "triton" else backend)
    filled = det.indices >= 0
    anchor_of = anchor_index.gather(1, det.indices.clamp_min(0)).masked_fill(~filled, -1)
    # built field by field: torch.compile (fullgraph) cannot trace NamedTuple._replace on CUDA
    return Detections(det.boxes, det.scores, det.labels, anchor_of, det.counts)


def retinanet_postprocess_reference(cls_logits, bbox_regression, anchors, image_sizes,
                                    level_sizes=None, score_thresh=0.05, nms_thresh=0.5,
                                    detections_per_img=300, topk_candidates=1000,
                                    weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=DEFAULT_CLAMP,
                                    batched_nms=None):
    """The MLCommons reference's loop (torchvision RetinaNet.postprocess_detections), image by
    image and level by level, in plain PyTorch. ``batched_nms`` defaults to the exact per-class
    NMS of :func:`mlperf_fast.ops.nms.batched_nms_torch`; pass torchvision.ops.batched_nms to
    get torchvision's. Returns a list of (boxes, scores, labels, anchor indices) per image."""
    from mlperf_fast.ops.box_decode import box_decode_torch
    from mlperf_fast.ops.nms import batched_nms_torch

    nms_fn = batched_nms or batched_nms_torch
    batch, num_anchors, num_classes = cls_logits.shape
    sizes = [num_anchors] if level_sizes is None else list(level_sizes)
    out = []
    for b in range(batch):
        all_boxes, all_scores, all_labels, all_anchors = [], [], [], []
        start = 0
        for size in sizes:
            logits = cls_logits[b, start:start + size]
            scores = torch.sigmoid(logits).flatten()
            keep = scores > score_thresh
            scores = scores[keep]
            idxs = torch.where(keep)[0]
            num = min(topk_candidates, idxs.numel())
            scores, order = scores.topk(num)
            idxs = idxs[order]
            anchor_idx = torch.div(idxs, num_classes, rounding_mode="floor")
            labels = idxs % num_classes
            anc = anchors[start:start + size] if anchors.dim() == 2 else anchors[b, start:start + size]
            boxes = box_decode_torch(bbox_regression[b, start:start + size][anchor_idx][None],
                                     anc[anchor_idx][None], weights, bbox_xform_clip,
                                     image_sizes[b:b + 1])[0]
            all_boxes.append(boxes)
            all_scores.append(scores)
            all_labels.append(labels)
            all_anchors.append(anchor_idx + start)
            start += size
        boxes = torch.cat(all_boxes)
        scores = torch.cat(all_scores)
        labels = torch.cat(all_labels)
        anchor_idx = torch.cat(all_anchors)
        keep = nms_fn(boxes, scores, labels, nms_thresh)[:detections_per_img]
        out.append((boxes[keep], scores[keep], labels[keep], anchor_idx[keep]))
    return out
