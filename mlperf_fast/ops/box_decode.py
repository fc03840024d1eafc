"""Anchor-based box decoding: torchvision's BoxCoder.decode_single (RetinaNet, SSD, Faster
R-CNN), fused into one pass, optionally with clip_boxes_to_image folded in."""
from __future__ import annotations

import math

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op

DEFAULT_CLAMP = math.log(1000.0 / 16)  # torchvision's bbox_xform_clip


def box_decode(rel_codes: torch.Tensor, anchors: torch.Tensor,
               weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
               bbox_xform_clip: float = DEFAULT_CLAMP, image_sizes: torch.Tensor | None = None,
               *, backend: str = "auto") -> torch.Tensor:
    """Boxes from anchors and regression deltas.

    Args:
        rel_codes: (N, 4) or (B, N, 4) deltas (dx, dy, dw, dh), a float dtype.
        anchors: (N, 4) or (B, N, 4) (x1, y1, x2, y2) anchors, shared by every image when 2-D.
        weights: (wx, wy, ww, wh): the deltas are divided by these (RetinaNet (1, 1, 1, 1),
            Faster R-CNN (10, 10, 5, 5), SSD (10, 10, 5, 5)).
        bbox_xform_clip: dw and dh are clamped above at this before exp.
        image_sizes: optional (B, 2) (height, width) per image (with 3-D rel_codes): boxes are
            clipped to [0, width] x [0, height], as torchvision's clip_boxes_to_image.
        backend: "auto" (Triton on a GPU, else torch), "triton" or "torch".

    Returns:
        (x1, y1, x2, y2) boxes with rel_codes' shape and dtype (computed in float32, float64 for
        float64 codes).
    """
    for name, t in (("rel_codes", rel_codes), ("anchors", anchors)):
        _checks.float_tensor(t, name)
        if t.dim() not in (2, 3) or t.shape[-1] != 4:
            raise _checks.ArgumentValueError(
                f"{name} must have shape (N, 4) or (B, N, 4), got {tuple(t.shape)}")
    _checks.same_device(anchors, "anchors", rel_codes, "rel_codes")
    per_image = anchors.dim() == 3
    if anchors.shape[-2] != rel_codes.shape[-2] or (per_image and (
            rel_codes.dim() != 3 or anchors.shape[0] != rel_codes.shape[0])):
        raise _checks.ArgumentValueError(
            f"anchors has shape {tuple(anchors.shape)} but rel_codes has shape "
            f"{tuple(rel_codes.shape)}: one anchor per box (2-D anchors are shared by every "
            "image)")
    if isinstance(weights, torch.Tensor) or not isinstance(weights, (tuple, list)) \
            or len(weights) != 4:
        raise _checks.ArgumentTypeError(f"weights must be four floats, got {weights!r}")
    weights = tuple(_checks.real(w, f"weights[{i}]", allow_inf=False)
                    for i, w in enumerate(weights))
    if any(w == 0 for w in weights):
        raise _checks.ArgumentValueError(f"weights must be nonzero, got {weights!r}")
    bbox_xform_clip = _checks.real(bbox_xform_clip, "bbox_xform_clip")
    if image_sizes is not None:
        _checks.tensor(image_sizes, "image_sizes")
        if image_sizes.dtype.is_complex or image_sizes.dtype == torch.bool:
            raise _checks.ArgumentTypeError(f"image_sizes has dtype {image_sizes.dtype}; "
                                            "expected an integer or float dtype")
        if rel_codes.dim() != 3 or image_sizes.shape != (rel_codes.shape[0], 2):
            raise _checks.ArgumentValueError(
                f"image_sizes must have shape (B, 2) for rel_codes of shape (B, N, 4), got "
                f"{tuple(image_sizes.shape)} and {tuple(rel_codes.shape)}")
        _checks.same_device(image_sizes, "image_sizes", rel_codes, "rel_codes")
    anchors = anchors.expand_as(rel_codes)
    return BOX_DECODE(rel_codes.device, backend, rel_codes, anchors, weights, bbox_xform_clip,
                      image_sizes)


def box_decode_torch(rel_codes: torch.Tensor, anchors: torch.Tensor,
                     weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                     bbox_xform_clip: float = DEFAULT_CLAMP,
                     image_sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The pure-PyTorch implementation (torchvision's expression, in float32 for float16 and
    bfloat16 codes): same contract."""
    dtype = rel_codes.dtype
    acc = _checks.acc_dtype(dtype)
    codes = rel_codes.to(acc)
    boxes = anchors.to(acc).expand_as(codes)
    wx, wy, ww, wh = weights
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    ctr_x = boxes[..., 0] + 0.5 * widths
    ctr_y = boxes[..., 1] + 0.5 * heights
    dx = codes[..., 0] / wx
    dy = codes[..., 1] / wy
    dw = (codes[..., 2] / ww).clamp(max=bbox_xform_clip)
    dh = (codes[..., 3] / wh).clamp(max=bbox_xform_clip)
    pred_x = dx * widths + ctr_x
    pred_y = dy * heights + ctr_y
    half_w = 0.5 * (torch.exp(dw) * widths)
    half_h = 0.5 * (torch.exp(dh) * heights)
    out = torch.stack([pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h], -1)
    if image_sizes is not None:
        h = image_sizes[:, 0].to(acc)[:, None, None]
        w = image_sizes[:, 1].to(acc)[:, None, None]
        zero = torch.zeros((), dtype=acc, device=out.device)
        xs = torch.minimum(torch.maximum(out[..., 0::2], zero), w)
        ys = torch.minimum(torch.maximum(out[..., 1::2], zero), h)
        out = torch.stack([xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]], -1)
    return out.to(dtype)


def _box_decode_triton(rel_codes, anchors, weights, bbox_xform_clip, image_sizes):
    from mlperf_fast.kernels import box_decode as kernel

    return kernel.box_decode(rel_codes, anchors, tuple(weights), bbox_xform_clip, image_sizes)


box_decode_triton = custom_op(
    "box_decode_triton",
    "(Tensor rel_codes, Tensor anchors, float[] weights, float bbox_xform_clip, "
    "Tensor? image_sizes) -> Tensor", _box_decode_triton)
BOX_DECODE = register_op("box_decode", triton=box_decode_triton, torch_fn=box_decode_torch)
