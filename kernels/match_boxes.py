"""Triton anchor-to-ground-truth matcher (torchvision's Matcher on box_iou(gt, anchors)) without
the (G, A) IoU matrix: each program takes a block of anchors of one image and walks that image's
ground-truth boxes.

Pass 1: per anchor the best IoU and its first gt; per gt the best IoU over all anchors (an
atomic max). Pass 2: the thresholds, and with allow_low_quality_matches the anchors that reach
some gt's best IoU get their best gt back (torchvision's set_low_quality_matches_).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mlperf_fast.kernels.box_iou import acc_dtype, iou

BLOCK = 512


@triton.jit
def _anchor(anchors_ptr, offs, mask, ACC: tl.constexpr):
    x1 = tl.load(anchors_ptr + offs * 4, mask=mask, other=0.0).to(ACC)
    y1 = tl.load(anchors_ptr + offs * 4 + 1, mask=mask, other=0.0).to(ACC)
    x2 = tl.load(anchors_ptr + offs * 4 + 2, mask=mask, other=0.0).to(ACC)
    y2 = tl.load(anchors_ptr + offs * 4 + 3, mask=mask, other=0.0).to(ACC)
    return x1, y1, x2, y2, (x2 - x1) * (y2 - y1)


@triton.jit
def _gt_iou(gt_ptr, g, x1, y1, x2, y2, area, ACC: tl.constexpr, IS64: tl.constexpr):
    gx1 = tl.load(gt_ptr + g * 4).to(ACC)
    gy1 = tl.load(gt_ptr + g * 4 + 1).to(ACC)
    gx2 = tl.load(gt_ptr + g * 4 + 2).to(ACC)
    gy2 = tl.load(gt_ptr + g * 4 + 3).to(ACC)
    return iou(gx1, gy1, gx2, gy2, (gx2 - gx1) * (gy2 - gy1), x1, y1, x2, y2, area, IS64)


@triton.jit
def _pass1(gt_ptr, num_gt_ptr, anchors_ptr, best_ptr, arg_ptr, gt_best_ptr, a, g_max,
           LOW_QUALITY: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
           IS64: tl.constexpr):
    img = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < a
    x1, y1, x2, y2, area = _anchor(anchors_ptr, offs, mask, ACC)
    num = tl.load(num_gt_ptr + img)
    gt = gt_ptr + img * g_max * 4
    best = tl.full([BLOCK], -1.0, ACC)
    arg = tl.zeros([BLOCK], tl.int64)
    for g in range(0, num):
        v = _gt_iou(gt, g, x1, y1, x2, y2, area, ACC, IS64)
        better = v > best  # strict: ties keep the first gt, as torch.max does
        best = tl.where(better, v, best)
        arg = tl.where(better, g, arg)
        if LOW_QUALITY:
            tl.atomic_max(gt_best_ptr + img * g_max + g, tl.max(tl.where(mask, v, -1.0), axis=0))
    tl.store(best_ptr + img * a + offs, best, mask=mask)
    tl.store(arg_ptr + img * a + offs, arg, mask=mask)


@triton.jit
def _pass2(gt_ptr, num_gt_ptr, anchors_ptr, best_ptr, arg_ptr, gt_best_ptr, out_ptr, a, g_max,
           high, low, LOW_QUALITY: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
           IS64: tl.constexpr):
    img = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < a
    num = tl.load(num_gt_ptr + img)
    best = tl.load(best_ptr + img * a + offs, mask=mask, other=0.0)
    arg = tl.load(arg_ptr + img * a + offs, mask=mask, other=0)
    matches = tl.where(best >= high, arg, tl.where(best < low, -1, -2))
    if LOW_QUALITY:
        x1, y1, x2, y2, area = _anchor(anchors_ptr, offs, mask, ACC)
        gt = gt_ptr + img * g_max * 4
        reach = tl.zeros([BLOCK], tl.int32)
        for g in range(0, num):
            v = _gt_iou(gt, g, x1, y1, x2, y2, area, ACC, IS64)
            reach = reach | (v == tl.load(gt_best_ptr + img * g_max + g)).to(tl.int32)
        matches = tl.where(reach != 0, arg, matches)
    matches = tl.where(num > 0, matches, -1)
    tl.store(out_ptr + img * a + offs, matches, mask=mask)


def match_boxes(gt_boxes: torch.Tensor, anchors: torch.Tensor, num_gt: torch.Tensor,
                high: float, low: float, allow_low_quality: bool) -> torch.Tensor:
    """(B, G, 4) gt, (A, 4) anchors, (B,) counts -> (B, A) int64 (arguments already checked)."""
    gt = gt_boxes.contiguous()
    anc = anchors.contiguous()
    num = num_gt.to(torch.int64).contiguous()
    batch, g_max, a = gt.shape[0], gt.shape[1], anc.shape[0]
    out = torch.empty(batch, a, dtype=torch.int64, device=gt.device)
    if out.numel() == 0:
        return out
    acc = torch.float64 if gt.dtype == torch.float64 or anc.dtype == torch.float64 else torch.float32
    best = torch.empty(batch, a, dtype=acc, device=gt.device)
    arg = torch.empty(batch, a, dtype=torch.int64, device=gt.device)
    gt_best = torch.full((batch, max(g_max, 1)), -1.0, dtype=acc, device=gt.device)
    grid = (triton.cdiv(a, BLOCK), batch)
    common = dict(LOW_QUALITY=allow_low_quality, BLOCK=BLOCK, ACC=acc_dtype(acc),
                  IS64=acc == torch.float64, num_warps=4, enable_fp_fusion=False)
    _pass1[grid](gt, num, anc, best, arg, gt_best, a, g_max, **common)
    _pass2[grid](gt, num, anc, best, arg, gt_best, out, a, g_max, float(high), float(low),
                 **common)
    return out
