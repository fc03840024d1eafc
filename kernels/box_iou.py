"""Triton IoU matrix: (N, M) IoUs of two box sets written once, without torchvision's ten
(N, M) intermediates.

The IoU is torchvision's box_iou expression with IEEE rounding (no FMA contraction, correctly
rounded division), so it equals torchvision's float32 / float64 result bit for bit and threshold
decisions downstream (matching, NMS) agree exactly.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 32
BLOCK_M = 64


@triton.jit
def iou(ax1, ay1, ax2, ay2, area_a, bx1, by1, bx2, by2, area_b, IS64: tl.constexpr):
    """IoU of boxes a and b (broadcasting), areas precomputed as (x2 - x1) * (y2 - y1)."""
    w = tl.maximum(tl.minimum(ax2, bx2) - tl.maximum(ax1, bx1), 0.0)
    h = tl.maximum(tl.minimum(ay2, by2) - tl.maximum(ay1, by1), 0.0)
    inter = w * h
    union = (area_a + area_b) - inter
    if IS64:
        return inter / union
    else:
        return tl.math.div_rn(inter, union)


@triton.jit
def _box_iou(a_ptr, b_ptr, out_ptr, n, m, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
             ACC: tl.constexpr, IS64: tl.constexpr):
    pn = tl.program_id(0)
    pm = tl.program_id(1)
    img = tl.program_id(2).to(tl.int64)
    rows = pn * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pm * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < n
    cmask = cols < m
    a = a_ptr + img * n * 4 + rows * 4
    b = b_ptr + img * m * 4 + cols * 4
    ax1 = tl.load(a, mask=rmask, other=0.0).to(ACC)
    ay1 = tl.load(a + 1, mask=rmask, other=0.0).to(ACC)
    ax2 = tl.load(a + 2, mask=rmask, other=1.0).to(ACC)
    ay2 = tl.load(a + 3, mask=rmask, other=1.0).to(ACC)
    bx1 = tl.load(b, mask=cmask, other=0.0).to(ACC)
    by1 = tl.load(b + 1, mask=cmask, other=0.0).to(ACC)
    bx2 = tl.load(b + 2, mask=cmask, other=1.0).to(ACC)
    by2 = tl.load(b + 3, mask=cmask, other=1.0).to(ACC)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    v = iou(ax1[:, None], ay1[:, None], ax2[:, None], ay2[:, None], area_a[:, None],
            bx1[None, :], by1[None, :], bx2[None, :], by2[None, :], area_b[None, :], IS64)
    out = out_ptr + img * n * m + rows[:, None].to(tl.int64) * m + cols[None, :]
    tl.store(out, v.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


def acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) x (B, M, 4) -> (B, N, M) (arguments checked by mlperf_fast.ops.box_iou)."""
    a = boxes1.contiguous()
    b = boxes2.contiguous()
    batch, n, m = a.shape[0], a.shape[1], b.shape[1]
    out = torch.empty(batch, n, m, dtype=a.dtype, device=a.device)
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(n, BLOCK_N), triton.cdiv(m, BLOCK_M), batch)
    _box_iou[grid](a, b, out, n, m, BLOCK_N=BLOCK_N, BLOCK_M=BLOCK_M, ACC=acc_dtype(a.dtype),
                   IS64=a.dtype == torch.float64, num_warps=4, enable_fp_fusion=False)
    return out
