"""Anchor-to-ground-truth matching (RetinaNet, SSD, Faster R-CNN): torchvision's
``Matcher(high, low, allow_low_quality_matches)(box_iou(gt, anchors))`` for a whole batch, without
materializing the (G, A) IoU matrix."""
from __future__ import annotations

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, host_checks_enabled, register_op
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
    _checks.same_device(anchors, "anchors", gt_boxes, "gt_boxes")
    single = gt_boxes.dim() == 2
    gt = gt_boxes[None] if single else gt_boxes
    batch, g = gt.shape[0], gt.shape[1]
    if num_gt is None:
        num_gt = torch.full((batch,), g, dtype=torch.int64, device=gt.device)
    else:
        _checks.integer_tensor(num_gt, "num_gt")
        _checks.shape(num_gt, "num_gt", (batch,))
        _checks.same_device(num_gt, "num_gt", gt, "gt_boxes")
        if num_gt.numel() and host_checks_enabled(num_gt) and (
                bool((num_gt < 0).any()) or bool((num_gt > g).any())):
            raise _checks.ArgumentValueError(f"num_gt must lie in [0, {g}], got "
                                             f"{num_gt.tolist()}")
    high_threshold = _checks.real(high_threshold, "high_threshold")
    low_threshold = _checks.real(low_threshold, "low_threshold")
    if low_threshold > high_threshold:
        raise _checks.ArgumentValueError(
            f"low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})")
    if isinstance(allow_low_quality_matches, torch.Tensor):
        raise _checks.ArgumentTypeError("allow_low_quality_matches must be a bool, got a tensor")
    out = MATCH_BOXES(gt.device, backend, gt, anchors, num_gt, high_threshold, low_threshold,
                      bool(allow_low_quality_matches))
    return out[0] if single else out


def match_boxes_torch(gt_boxes: torch.Tensor, anchors: torch.Tensor, num_gt: torch.Tensor,
                      high_threshold: float, low_threshold: float,
                      allow_low_quality_matches: bool) -> torch.Tensor:
    """torchvision's Matcher on each image's IoU matrix, for the whole batch at once (ground
    truth past num_gt masked out): same contract, batched form."""
    batch, g, a = gt_boxes.shape[0], gt_boxes.shape[1], anchors.shape[0]
    out = torch.full((batch, a), BELOW_LOW_THRESHOLD, dtype=torch.int64, device=gt_boxes.device)
    if g == 0 or a == 0:
        return out
    dtype = torch.promote_types(gt_boxes.dtype, anchors.dtype)
    quality = box_iou_torch(gt_boxes.to(dtype), anchors.to(dtype)[None].expand(batch, a, 4))
    valid = torch.arange(g, device=gt_boxes.device)[None, :] < num_gt.to(torch.int64)[:, None]
    # Masked ground truth scores below every IoU (>= 0, or NaN), so it is never the best match.
    quality = quality.masked_fill(~valid[:, :, None], -1.0)
    vals, matches = quality.max(dim=1)
    best_of = matches.clone()
    matches = torch.where(vals < low_threshold, BELOW_LOW_THRESHOLD, matches)
    matches = torch.where((vals >= low_threshold) & (vals < high_threshold), BETWEEN_THRESHOLDS,
                          matches)
    if allow_low_quality_matches:
        highest = quality.max(dim=2).values
        reach = ((quality == highest[:, :, None]) & valid[:, :, None]).any(dim=1)
        matches = torch.where(reach, best_of, matches)
    return torch.where((num_gt > 0)[:, None], matches, out)


def _match_boxes_triton(gt_boxes, anchors, num_gt, high_threshold, low_threshold,
                        allow_low_quality_matches):
    from mlperf_fast.kernels import match_boxes as kernel

    return kernel.match_boxes(gt_boxes, anchors, num_gt, high_threshold, low_threshold,
                              allow_low_quality_matches)


match_boxes_triton = custom_op(
    "match_boxes_triton",
    "(Tensor gt_boxes, Tensor anchors, Tensor num_gt, float high_threshold, "
    "float low_threshold, bool allow_low_quality_matches) -> Tensor", _match_boxes_triton)
MATCH_BOXES = register_op("match_boxes", triton=match_boxes_triton, torch_fn=match_boxes_torch)
