"""Triton box decoding (the RetinaNet / SSD / Faster R-CNN box coder): anchors plus regression
deltas to (x1, y1, x2, y2) boxes, one pass, optionally clipped to each image's size.

torchvision's BoxCoder.decode_single runs about twenty elementwise kernels, each over the whole
(N, 4) tensor; here each box is read and written once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _decode(codes_ptr, anchors_ptr, sizes_ptr, out_ptr, n, per_image,
            wx, wy, ww, wh, clamp,
            CLIP: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < n
    base = rows * 4
    dx = tl.load(codes_ptr + base, mask=mask, other=0.0).to(ACC) / wx
    dy = tl.load(codes_ptr + base + 1, mask=mask, other=0.0).to(ACC) / wy
    dw = tl.minimum(tl.load(codes_ptr + base + 2, mask=mask, other=0.0).to(ACC) / ww, clamp)
    dh = tl.minimum(tl.load(codes_ptr + base + 3, mask=mask, other=0.0).to(ACC) / wh, clamp)
    ax1 = tl.load(anchors_ptr + base, mask=mask, other=0.0).to(ACC)
    ay1 = tl.load(anchors_ptr + base + 1, mask=mask, other=0.0).to(ACC)
    ax2 = tl.load(anchors_ptr + base + 2, mask=mask, other=1.0).to(ACC)
    ay2 = tl.load(anchors_ptr + base + 3, mask=mask, other=1.0).to(ACC)
    widths = ax2 - ax1
    heights = ay2 - ay1
    ctr_x = ax1 + 0.5 * widths
    ctr_y = ay1 + 0.5 * heights
    pred_x = dx * widths + ctr_x
    pred_y = dy * heights + ctr_y
    half_w = 0.5 * (tl.exp(dw) * widths)
    half_h = 0.5 * (tl.exp(dh) * heights)
    x1 = pred_x - half_w
    y1 = pred_y - half_h
    x2 = pred_x + half_w
    y2 = pred_y + half_h
    if CLIP:
        image = rows // per_image
        h = tl.load(sizes_ptr + image * 2, mask=mask, other=1.0).to(ACC)
        w = tl.load(sizes_ptr + image * 2 + 1, mask=mask, other=1.0).to(ACC)
        x1 = tl.minimum(tl.maximum(x1, 0.0), w)
        x2 = tl.minimum(tl.maximum(x2, 0.0), w)
        y1 = tl.minimum(tl.maximum(y1, 0.0), h)
        y2 = tl.minimum(tl.maximum(y2, 0.0), h)
    ty = out_ptr.dtype.element_ty
    tl.store(out_ptr + base, x1.to(ty), mask=mask)
    tl.store(out_ptr + base + 1, y1.to(ty), mask=mask)
    tl.store(out_ptr + base + 2, x2.to(ty), mask=mask)
    tl.store(out_ptr + base + 3, y2.to(ty), mask=mask)


def box_decode(rel_codes: torch.Tensor, anchors: torch.Tensor, weights: tuple[float, ...],
               clamp: float, image_sizes: torch.Tensor | None) -> torch.Tensor:
    """Same contract as mlperf_fast.ops.box_decode (arguments checked, shapes (B, N, 4) or
    (N, 4), anchors already expanded to the codes' shape)."""
    codes = rel_codes.contiguous()
    anchors = anchors.contiguous()
    out = torch.empty_like(codes)
    n = codes.numel() // 4
    if n == 0:
        return out
    per_image = codes.shape[-2] if codes.dim() == 3 else n
    sizes = image_sizes.contiguous() if image_sizes is not None else codes
    acc = tl.float64 if codes.dtype == torch.float64 else tl.float32
    wx, wy, ww, wh = (float(w) for w in weights)
    _decode[(triton.cdiv(n, BLOCK),)](codes, anchors, sizes, out, n, max(per_image, 1),
                                      wx, wy, ww, wh, float(clamp),
                                      CLIP=image_sizes is not None, BLOCK=BLOCK, ACC=acc,
                                      num_warps=4)
    return out
