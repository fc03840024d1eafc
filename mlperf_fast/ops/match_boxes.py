"""Anchor-to-ground-truth matching (RetinaNet, SSD, Faster R-CNN): torchvision's
``Matcher(high, low, allow_low_quality_matches)(box_iou(gt, anchors))`` for a whole batch, without
materializing the (G, A) IoU matrix."""
from __future__ import annotations

import torch

from mlperf_fast.ops._library import choose_triton_or_torch
from mlperf_fast.ops.box_iou import box_iou_torch, check_boxes

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def match_boxes(gt_boxes: torch.Tensor, anchors: torch.Tensor, num_gt: torch.Tensor | None = None,
                high_threshold: float = 0.5, low_threshold: float = 0.4,
                allow_low_quality_matches: bool = True, *, backend: str = "auto") -> torch.Tensor:
    """The matched ground-truth index of every anchor.

    Args:
        gt_boxes: (G, 4) ground-truth boxes of one image, or (B, G, 4) for a batch padded to G
            boxes per image, (x1, y1, x2, y2), a float dtype.
        anchors: (A, 4) anchors, shared by the batch.
        num_gt: (B,) integer tensor: image b has ground truth gt_boxes[b, :num_gt[b]]; None: all G.
        high_threshold, low_threshold: as torchvision's Matcher (RetinaNet: 0.5, 0.4).
        allow_low_quality_matches: as torchvision's Matcher (RetinaNet: True).
        backend: "auto" (Triton on a GPU, else torch), "triton" or "torch".

    Returns:
        (A,) or (B, A) int64: the gt index in [0, num_gt) of anchors with IoU >= high (or that
        reach some gt's best IoU, with allow_low_quality_matches), -1 below low, -2 between.
        Ties go to the lower gt index, as torch.max does. An image without ground truth gets -1
        everywhere (as RetinaNet's loss treats it).
    """
    check_boxes(gt_boxes, "gt_boxes")
    check_boxes(anchors, "anchors", dims=(2,))
    if anchors.device != gt_boxes.device:
        raise ValueError(f"anchors is on {anchors.device} but gt_boxes is on {gt_boxes.device}")
    single = gt_boxes.dim() == 2
    gt = gt_boxes[None] if single else gt_boxes
    batch, g = gt.shape[0], gt.shape[1]
    if num_gt is None:
        num_gt = torch.full((batch,), g, dtype=torch.int64, device=gt.device)
    else:
        if not isinstance(num_gt, torch.Tensor):
            raise TypeError(f"num_gt must be a tensor, got {type(num_gt).__name__}")
        if num_gt.dtype.is_floating_point or num_gt.dtype == torch.bool:
            raise TypeError(f"num_gt has dtype {num_gt.dtype}; expected an integer dtype")
        if num_gt.shape != (batch,):
            raise ValueError(f"num_gt must have shape ({batch},), got {tuple(num_gt.shape)}")
        if num_gt.device != gt.device:
            raise ValueError(f"num_gt is on {num_gt.device} but gt_boxes is on {gt.device}")
        if num_gt.numel() and (bool((num_gt < 0).any()) or bool((num_gt > g).any())):
            raise ValueError(f"num_gt must lie in [0, {g}], got {num_gt.tolist()}")
    for name, v in (("high_threshold", high_threshold), ("low_threshold", low_threshold)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a float, got {type(v).__name__}")
    if low_threshold > high_threshold:
        raise ValueError(f"low_threshold ({low_threshold}) must not exceed high_threshold "
                         f"({high_threshold})")
    chosen = choose_triton_or_torch("match_boxes", gt.device, backend)
    if chosen == "torch":
        out = match_boxes_torch(gt, anchors, num_gt, high_threshold, low_threshold,
                                allow_low_quality_matches)
    else:
        from mlperf_fast.kernels import match_boxes as kernel

        out = kernel.match_boxes(gt, anchors, num_gt, float(high_threshold), float(low_threshold),
                                 bool(allow_low_quality_matches))
    return out[0] if single else out


def match_boxes_torch(gt_boxes: torch.Tensor, anchors: torch.Tensor, num_gt: torch.Tensor,
                      high_threshold: float, low_threshold: float,
                      allow_low_quality_matches: bool) -> torch.Tensor:
    """Image by image, torchvision's Matcher on the IoU matrix: same contract, batched form."""
    out = torch.full((gt_boxes.shape[0], anchors.shape[0]), BELOW_LOW_THRESHOLD,
                     dtype=torch.int64, device=gt_boxes.device)
    for b, n in enumerate(num_gt.tolist()):
        if n == 0 or anchors.shape[0] == 0:
            continue
        dtype = torch.promote_types(gt_boxes.dtype, anchors.dtype)
        quality = box_iou_torch(gt_boxes[b, :n].to(dtype), anchors.to(dtype))  # (n, A)
        vals, matches = quality.max(dim=0)
        best_of = matches.clone()
        matches[vals < low_threshold] = BELOW_LOW_THRESHOLD
        matches[(vals >= low_threshold) & (vals < high_threshold)] = BETWEEN_THRESHOLDS
        if allow_low_quality_matches:
            highest = quality.max(dim=1).values
            reach = (quality == highest[:, None]).any(dim=0)
            matches[reach] = best_of[reach]
        out[b] = matches
    return out
