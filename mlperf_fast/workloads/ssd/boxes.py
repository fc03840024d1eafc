"""SSD's default boxes, the encoder (ground truth -> per-default-box targets) and the decoder
(network output -> detections), batched.

Boxes are in coordinates relative to the image ([0, 1] x [0, 1]); ``ltrb`` is (left, top, right,
bottom), ``xywh`` is (centre x, centre y, width, height).

Order of the default boxes. The reference (reference.py) lists a feature map's boxes size by
size ("d-major": index ``d * H * W + i * W + j``) because its heads are read as
``conv(x).view(N, 4, -1)``. The optimized model (model.py) keeps its activations channels-last,
where the free view of a head's output ``(N, H, W, nd * 4)`` is ``(N, H * W * nd, 4)``: location
by location, the sizes inside ("hwd": index ``(i * W + j) * nd + d``), torchvision's
DefaultBoxGenerator's order. :func:`reference_permutation` maps one order onto the other.

The matching rule is the reference's (utils.py ``Encoder.encode``), which differs from
torchvision's Matcher (mlperf_fast.ops.match_boxes): every default box takes its best ground
truth box if that IoU is > 0.5 (strictly), and each ground truth box's best default box is
forced to that ground truth box whatever its IoU (when two ground truth boxes share a best
default box, the later one keeps it, as the reference's sequential assignment leaves it).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mlperf_fast.ops.box_iou import box_iou


def ltrb_to_xywh(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) ltrb -> (..., 4) xywh, same dtype."""
    return torch.stack([0.5 * (b[..., 0] + b[..., 2]), 0.5 * (b[..., 1] + b[..., 3]),
                        b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], -1)


def xywh_to_ltrb(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) xywh -> (..., 4) ltrb, same dtype."""
    return torch.stack([b[..., 0] - 0.5 * b[..., 2], b[..., 1] - 0.5 * b[..., 3],
                        b[..., 0] + 0.5 * b[..., 2], b[..., 1] + 0.5 * b[..., 3]], -1)


def boxes_per_location(aspect_ratios: Sequence[Sequence[float]]) -> list[int]:
    """Default boxes per feature-map location: 2 squares plus 2 per aspect ratio."""
    return [2 + 2 * len(a) for a in aspect_ratios]


@dataclass(frozen=True)
class DefaultBoxes:
    """The default boxes of one SSD geometry.

    ``xywh`` and ``ltrb``: (A, 4) float32 (xywh clamped to [0, 1] as the reference does, ltrb
    computed from the clamped xywh); ``scale_xy``/``scale_wh``: the encoding's variances (0.1,
    0.2). ``order``: "hwd" (model.py's) or "dhw" (the reference's d-major order), see the
    module docstring."""

    xywh: torch.Tensor
    ltrb: torch.Tensor
    scale_xy: float
    scale_wh: float
    order: str

    def __len__(self) -> int:
        return self.xywh.shape[0]

    def to(self, device: torch.device | str) -> DefaultBoxes:
        return DefaultBoxes(self.xywh.to(device), self.ltrb.to(device), self.scale_xy,
                            self.scale_wh, self.order)


def default_boxes(fig_size: int, feat_sizes: Sequence[int], steps: Sequence[int],
                  scales: Sequence[float], aspect_ratios: Sequence[Sequence[float]],
                  scale_xy: float = 0.1, scale_wh: float = 0.2,
                  order: str = "hwd") -> DefaultBoxes:
    """SSD's default boxes (reference utils.py ``DefaultBoxes``): on feature map k of
    ``feat_sizes[k]`` x ``feat_sizes[k]``, centres ``(j + 0.5) * steps[k] / fig_size``; sizes
    ``s_k = scales[k] / fig_size``, ``sqrt(s_k * s_{k+1})`` (squares) and ``s_k * sqrt(a)``
    by ``s_k / sqrt(a)`` both ways for each aspect ratio a. ``scales`` has one more entry than
    ``feat_sizes``. SSD300: 8,732 boxes."""
    n = len(feat_sizes)
    if not (len(steps) == len(aspect_ratios) == n and len(scales) == n + 1) or n == 0:
        raise ValueError(f"{n} feature maps need {n} steps, {n} aspect-ratio lists and {n + 1} "
                         f"scales; got {len(steps)}, {len(aspect_ratios)} and {len(scales)}")
    if order not in ("hwd", "dhw"):
        raise ValueError(f"order must be 'hwd' or 'dhw', got {order!r}")
    if fig_size <= 0 or min(feat_sizes) < 1 or min(steps) <= 0 or min(scales) <= 0:
        raise ValueError("fig_size, feat_sizes, steps and scales must be positive")
    out = []
    for k, f in enumerate(feat_sizes):
        s1, s2 = scales[k] / fig_size, scales[k + 1] / fig_size
        s3 = math.sqrt(s1 * s2)
        sizes = [(s1, s1), (s3, s3)]
        for a in aspect_ratios[k]:
            w, h = s1 * math.sqrt(a), s1 / math.sqrt(a)
            sizes += [(w, h), (h, w)]
        # centres in float64 then one rounding, as the reference's Python floats
        c = (torch.arange(f, dtype=torch.float64) + 0.5) / (fig_size / steps[k])
        cy, cx = torch.meshgrid(c, c, indexing="ij")  # (f, f): row i, column j
        wh = torch.tensor(sizes, dtype=torch.float64)  # (nd, 2)
        nd = wh.shape[0]
        centres = torch.stack([cx, cy], -1).reshape(1, f * f, 2).expand(nd, f * f, 2)
        sizes_ = wh[:, None, :].expand(nd, f * f, 2)
        level = torch.cat([centres, sizes_], -1)  # (nd, f*f, 4): d-major
        if order == "hwd":
            level = level.transpose(0, 1)
        out.append(level.reshape(-1, 4))
    xywh = torch.cat(out).to(torch.float32).clamp_(0, 1)
    return DefaultBoxes(xywh, xywh_to_ltrb(xywh), scale_xy, scale_wh, order)


def reference_permutation(feat_sizes: Sequence[int], per_location: Sequence[int]) -> torch.Tensor:
    """(A,) int64 ``perm`` with ``hwd[a] = dhw[perm[a]]``: the reference's box for each box of
    model.py's order."""
    perm, offset = [], 0
    for f, nd in zip(feat_sizes, per_location):
        idx = torch.arange(nd * f * f).view(nd, f * f).t().reshape(-1)  # (hw, d) -> d*HW + hw
        perm.append(idx + offset)
        offset += nd * f * f
    return torch.cat(perm)


def encode_batch(gt_ltrb: torch.Tensor, gt_labels: torch.Tensor, num_gt: torch.Tensor,
                 dboxes: DefaultBoxes, criteria: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's matching and encoding for a batch at once.

    Args:
        gt_ltrb: (B, G, 4) float ground-truth boxes (relative ltrb), padded to G per image.
        gt_labels: (B, G) int64 labels in 1..C-1 (0 is the background).
        num_gt: (B,) int64: image b's boxes are the first num_gt[b] (0: no box, all background).
        dboxes: the default boxes (A of them), on the same device.
        criteria: the IoU a default box needs (strictly more) to take a ground-truth box.
    Returns:
        loc: (B, A, 4) float32 regression targets ``((g_xy - d_xy) / d_wh / scale_xy,
        log(g_wh / d_wh) / scale_wh)`` (0 for background boxes, which the reference encodes as
        the default box itself); labels: (B, A) int64.
    """
    if gt_ltrb.dim() != 3 or gt_ltrb.shape[-1] != 4:
        raise ValueError(f"gt_ltrb must have shape (B, G, 4), got {tuple(gt_ltrb.shape)}")
    b, g = gt_ltrb.shape[:2]
    if gt_labels.shape != (b, g) or num_gt.shape != (b,):
        raise ValueError(f"gt_labels must be (B, G) = {(b, g)} and num_gt (B,), got "
                         f"{tuple(gt_labels.shape)} and {tuple(num_gt.shape)}")
    a = len(dboxes)
    dev = gt_ltrb.device
    labels = torch.zeros(b, a, dtype=torch.int64, device=dev)
    loc = torch.zeros(b, a, 4, dtype=torch.float32, device=dev)
    if g == 0 or b == 0:
        return loc, labels
    gt = gt_ltrb.to(torch.float32)
    anchors = dboxes.ltrb.to(dev)
    ious = box_iou(gt, anchors[None].expand(b, a, 4), backend="torch")  # (B, G, A)
    valid = torch.arange(g, device=dev)[None, :] < num_gt.to(dev)[:, None]  # (B, G)
    ious = ious.masked_fill(~valid[:, :, None], -1.0)
    best_iou, best_gt = ious.max(dim=1)  # (B, A): each default box's best ground truth
    best_anchor = ious.argmax(dim=2)  # (B, G): each ground truth's best default box
    # Force each ground truth's best default box to it; of several sharing one, the highest
    # index wins (the reference assigns in order, the last write stays).
    gidx = torch.arange(g, device=dev).expand(b, g).masked_fill(~valid, -1)
    forced = torch.full((b, a), -1, dtype=torch.int64, device=dev)
    forced.scatter_reduce_(1, best_anchor, gidx, reduce="amax")
    best_gt = torch.where(forced >= 0, forced, best_gt)
    best_iou = torch.where(forced >= 0, torch.full_like(best_iou, 2.0), best_iou)
    matched = (best_iou > criteria) & (num_gt.to(dev) > 0)[:, None]
    labels = torch.where(matched, torch.gather(gt_labels.to(dev), 1, best_gt), labels)
    boxes = torch.gather(gt, 1, best_gt[:, :, None].expand(b, a, 4))  # (B, A, 4) ltrb
    g_xywh = ltrb_to_xywh(boxes)
    d = dboxes.xywh.to(dev)
    xy = (g_xywh[..., :2] - d[:, :2]) / d[:, 2:] / dboxes.scale_xy
    wh = torch.log(g_xywh[..., 2:] / d[:, 2:]) / dboxes.scale_wh
    loc = torch.where(matched[..., None], torch.cat([xy, wh], -1), loc)
    return loc, labels


def encode(boxes_ltrb: torch.Tensor, labels: torch.Tensor, dboxes: DefaultBoxes,
           criteria: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: (n, 4) relative ltrb boxes and (n,) labels in 1..C-1 -> (A, 4) float32
    targets and (A,) int64 labels (see :func:`encode_batch`). Used in the loader's workers."""
    n = boxes_ltrb.shape[0]
    loc, lab = encode_batch(boxes_ltrb.reshape(1, n, 4), labels.reshape(1, n).to(torch.int64),
                            torch.tensor([n]), dboxes, criteria)
    return loc[0], lab[0]


def decode_boxes(ploc: torch.Tensor, dboxes: DefaultBoxes) -> torch.Tensor:
    """(B, A, 4) regression output -> (B, A, 4) relative ltrb boxes (the reference's
    ``scale_back_batch``), in float32, through mlperf_fast.ops.box_decode with SSD's weights
    (1/scale_xy, 1/scale_xy, 1/scale_wh, 1/scale_wh) and no clamp, as the reference has none."""
    from mlperf_fast.ops.box_decode import box_decode

    w = (1.0 / dboxes.scale_xy, 1.0 / dboxes.scale_xy, 1.0 / dboxes.scale_wh,
         1.0 / dboxes.scale_wh)
    return box_decode(ploc.float(), dboxes.ltrb.to(ploc.device), weights=w,
                      bbox_xform_clip=math.inf)


def decode_batch(ploc: torch.Tensor, plabel: torch.Tensor, dboxes: DefaultBoxes, *,
                 score_threshold: float = 0.05, iou_threshold: float = 0.5,
                 max_per_class: int = 200, max_output: int = 200):
    """Detections of a batch, as the reference's ``decode_batch`` (eval: NMS 0.5, 200 boxes):
    per class (background excluded), the ``max_per_class`` best boxes scoring > 0.05 (softmax),
    NMS within the class, then the ``max_output`` best of all classes, without per-image or
    per-class loops (mlperf_fast.ops.nms_padded).

    Args:
        ploc: (B, A, 4) regression output; plabel: (B, A, C) class logits (class 0:
        background); any float dtype. dboxes: in the output's order.
    Returns:
        mlperf_fast.ops.nms.Detections: boxes (B, K, 4) relative ltrb float32, scores (B, K),
        labels (B, K) in 1..C-1 (-1 in empty slots), counts (B,), K = max_output.

    One difference: the reference drops a box whose IoU with a kept one is >= the threshold,
    NMS here one whose IoU is > it (equal only where an IoU is exactly 0.5).
    """
    from mlperf_fast.ops.nms import nms_padded

    b, a, c = plabel.shape
    boxes = decode_boxes(ploc, dboxes)  # (B, A, 4)
    probs = torch.softmax(plabel.float(), dim=-1)[..., 1:].transpose(1, 2)  # (B, C-1, A)
    k = min(max_per_class, a)
    top, idx = probs.topk(k, dim=-1)  # (B, C-1, k), best first
    cand = torch.gather(boxes[:, None].expand(b, c - 1, a, 4), 2,
                        idx[..., None].expand(b, c - 1, k, 4))
    labels = torch.arange(1, c, device=plabel.device)[None, :, None].expand(b, c - 1, k)
    return nms_padded(cand.reshape(b, -1, 4), top.reshape(b, -1), labels.reshape(b, -1),
                      iou_threshold=iou_threshold, score_threshold=score_threshold,
                      max_detections=max_output)
