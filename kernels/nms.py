"""Triton NMS for a batch of images in two launches, the algorithm of csrc/nms/nms_cuda.cu.

1. Mask: program (column block, row block, image) takes 64 x 64 boxes of the score order and
   writes, for each of its 64 rows, the 64-bit word mask[image, row, column block] whose bit c
   says that the row's box would suppress box 64 * (column block) + c (IoU above the threshold, a
   later box, the same label when there are labels). Tiles below the diagonal exit at once. The
   boxes are read through the sort's permutation, so no sorted copy of boxes or labels is made.
2. Reduce: one program per image walks its rows 64 at a time, the image's 'removed' bits in a
   global scratch row. A scalar loop over the step's diagonal words (the only serial dependency;
   their 64 loads do not depend on it) picks the kept rows; then each thread ORs one later word
   of every kept row into the removed bits: up to 64 independent loads, predicated off for rows
   not kept, each one contiguous across the threads. Kept boxes are written out as they are
   found (original indices, and for the padded form their boxes, scores and labels); the walk
   stops at max_out kept boxes.

The IoU is the expression of the C++/CUDA kernels as their compilers build it, every rounding in
the same place (no contraction but the one fma that nvcc makes, correctly rounded division), so
the decisions are theirs bit for bit: on CUDA tensors torchvision's CUDA form (float16/bfloat16
overlaps rounded to the boxes' dtype, one box's area fused into the sum of areas, the threshold
rounded to float), on CPU tensors (Triton's interpreter) torchvision's CPU form (corners
converted first, areas rounded, the IoU compared with the threshold as a double).
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

BLOCK = 64    # boxes per mask word, and the tile edge of the mask kernel
REDUCE_WARPS = 8
CHUNK = 32 * REDUCE_WARPS  # later words updated per pass of the reduction, one per thread
MAX_GRID = 65535


def threshold_for(iou_threshold: float, dtype: torch.dtype, cuda_rules: bool) -> float:
    """The threshold that the IoU (float32, float64 for float64 boxes) is compared against so that
    the decision is the device's: CUDA compares with the threshold rounded to float; the CPU
    compares in double, which for a float IoU means against the largest float <= threshold."""
    if cuda_rules:
        return float(np.float32(iou_threshold))
    if dtype == torch.float64:
        return iou_threshold
    t = np.float32(iou_threshold)
    if float(t) > iou_threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


@triton.jit
def _as(x, T: tl.constexpr):
    # A float64 scalar argument in dtype T (a Python float in the interpreter).
    return (x + tl.zeros([], tl.float64)).to(T)


@triton.jit
def _rounded(x, T: tl.constexpr):
    """float32 x rounded to T (float16 or bfloat16), to nearest even, as a float32. bfloat16 by
    hand: the interpreter truncates that cast, the GPU rounds, and both must round."""
    if T == tl.bfloat16:
        u = x.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.to(tl.float32, bitcast=True)
    else:
        return x.to(T).to(tl.float32)


@triton.jit
def _gather_boxes(boxes, sn, sc, idx, live, ACC: tl.constexpr, LOW: tl.constexpr):
    """Corners of boxes[idx], width and height. LOW (float16/bfloat16 on CUDA): corners stay in
    the boxes' dtype and the height is rounded to it, as torchvision's CUDA kernel computes."""
    p = boxes + idx * sn
    x1 = tl.load(p, mask=live, other=0.0)
    y1 = tl.load(p + sc, mask=live, other=0.0)
    # Absent boxes are unit squares: no 0 / 0 in lanes that are masked off anyway.
    x2 = tl.load(p + 2 * sc, mask=live, other=1.0)
    y2 = tl.load(p + 3 * sc, mask=live, other=1.0)
    if LOW:
        dx = x2.to(ACC) - x1.to(ACC)
        dy = _rounded(y2.to(ACC) - y1.to(ACC), x1.dtype)
    else:
        x1, y1, x2, y2 = x1.to(ACC), y1.to(ACC), x2.to(ACC), y2.to(ACC)
        dx = x2 - x1
        dy = y2 - y1
    return x1, y1, x2, y2, dx, dy


@triton.jit
def _side(lo_a, lo_b, hi_a, hi_b, ACC: tl.constexpr, LOW: tl.constexpr):
    # Overlap along one axis, clamped at 0 (rounded to the boxes' dtype first when LOW).
    d = tl.minimum(hi_a, hi_b).to(ACC) - tl.maximum(lo_a, lo_b).to(ACC)
    if LOW:
        d = _rounded(d, lo_a.dtype)
    return tl.maximum(d, 0.0)


@triton.jit
def _mask_kernel(boxes, sb, sn, sc, order, so, labels, slb, sl, n_valid, mask, m, words,
                 threshold: tl.float64, HAS_LABELS: tl.constexpr, HAS_VALID: tl.constexpr,
                 ACC: tl.constexpr, CUDA: tl.constexpr, LOW: tl.constexpr, IS64: tl.constexpr,
                 BLOCK: tl.constexpr):
    col_block = tl.program_id(0)
    row_block = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n = m
    if HAS_VALID:
        n = tl.minimum(tl.maximum(tl.load(n_valid + b), 0), m).to(tl.int32)
    col0 = col_block * BLOCK
    if (row_block <= col_block) & (col0 < n):
        lanes = tl.arange(0, BLOCK)
        rows = row_block * BLOCK + lanes
        cols = col0 + lanes
        rlive = rows < n
        clive = cols < n
        ri = tl.load(order + b * so + rows, mask=rlive, other=0)
        ci = tl.load(order + b * so + cols, mask=clive, other=0)
        image = boxes + b * sb
        ax1, ay1, ax2, ay2, adx, ady = _gather_boxes(image, sn, sc, ri, rlive, ACC, LOW)
        bx1, by1, bx2, by2, bdx, bdy = _gather_boxes(image, sn, sc, ci, clive, ACC, LOW)
        w = _side(ax1[:, None], bx1[None, :], ax2[:, None], bx2[None, :], ACC, LOW)
        h = _side(ay1[:, None], by1[None, :], ay2[:, None], by2[None, :], ACC, LOW)
        inter = w * h
        if CUDA:
            # nvcc (default --fmad=true) builds csrc/nms's area_a + area_b, torchvision's
            # expression, with one product fused into the sum (cuobjdump -sass of the extension
            # shows it): in float32 and float64 the later box's, the earlier box's area being
            # hoisted out of the column loop and rounded; in float16/bfloat16 the earlier box's.
            # (The interpreter's fma rounds the product: only the GPU gets this bit right.)
            if LOW:
                union = tl.fma(adx[:, None], ady[:, None], (bdx * bdy)[None, :]) - inter
            else:
                union = tl.fma(bdx[None, :], bdy[None, :], (adx * ady)[:, None]) - inter
        else:
            union = ((adx * ady)[:, None] + (bdx * bdy)[None, :]) - inter
        if IS64:
            iou = inter / union
        else:
            iou = tl.math.div_rn(inter, union)
        hit = (iou > _as(threshold, ACC)) & (cols[None, :] > rows[:, None]) & clive[None, :]
        if HAS_LABELS:
            lr = tl.load(labels + b * slb + ri * sl, mask=rlive, other=0)
            lc = tl.load(labels + b * slb + ci * sl, mask=clive, other=0)
            hit = hit & (lr[:, None] == lc[None, :])
        # Distinct powers of two: their sum is their OR (bit 63 wraps to the sign, as wanted).
        one = tl.full([BLOCK], 1, tl.int64)
        word = tl.sum(tl.where(hit, (one << lanes)[None, :], 0), axis=1)
        out = mask + (b * words * BLOCK + rows) * words + col_block
        tl.store(out, word, mask=rlive)


@triton.jit
def _reduce_kernel(mask, removed, n_valid, order, so, m, words, max_out, out_index, counts,
                   boxes, sb, sn, sc, scores, ssb, ssn, labels, slb, sl,
                   out_boxes, out_scores, out_labels,
                   HAS_VALID: tl.constexpr, PADDED: tl.constexpr, HAS_LABELS: tl.constexpr,
                   BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    n = m
    if HAS_VALID:
        n = tl.minimum(tl.maximum(tl.load(n_valid + b), 0), m).to(tl.int32)
    blocks = (n + BLOCK - 1) // BLOCK
    gone = removed + b * words
    image = mask + b * words * BLOCK * words
    for w0 in range(0, blocks, CHUNK):
        w = w0 + tl.arange(0, CHUNK)
        tl.store(gone + w, tl.zeros([CHUNK], tl.int64), mask=w < blocks)
    tl.debug_barrier()

    lanes = tl.arange(0, BLOCK)
    kept = tl.zeros([], tl.int32)
    blk = tl.zeros([], tl.int32)
    while (blk < blocks) & (kept < max_out):
        row0 = blk * BLOCK
        nrows = tl.minimum(n - row0, BLOCK)
        step = image + row0.to(tl.int64) * words
        # Rows past the image's candidates start out removed. Their mask words (the mask has
        # whole 64-row blocks) are unwritten and only ever ANDed with 0.
        past = tl.full([], -1, tl.int64) << tl.minimum(nrows, BLOCK - 1)
        rem = tl.load(gone + blk) | tl.where(nrows < BLOCK, past, 0)
        # The serial part: rows in score order, each kept unless an earlier kept row of this
        # block or of an earlier one removed it.
        bits = tl.zeros([], tl.int64)
        diag = step + blk
        for r in tl.static_range(BLOCK):
            free = ((rem >> r) & 1) ^ 1
            bits |= free << r
            rem |= tl.load(diag) & -free
            diag += words

        take = ((bits >> lanes) & 1) != 0
        rank = tl.cumsum(take.to(tl.int32), 0)
        take = take & (rank <= max_out - kept)
        rows = row0 + lanes
        slot = b * max_out + kept + rank - 1
        idx = tl.load(order + b * so + rows, mask=take, other=0)
        tl.store(out_index + slot, idx, mask=take)
        if PADDED:
            src = boxes + b * sb + idx * sn
            for c in tl.static_range(4):
                tl.store(out_boxes + slot * 4 + c, tl.load(src + c * sc, mask=take), mask=take)
            tl.store(out_scores + slot, tl.load(scores + b * ssb + idx * ssn, mask=take),
                     mask=take)
            if HAS_LABELS:
                lab = tl.load(labels + b * slb + idx * sl, mask=take).to(tl.int64)
            else:
                lab = tl.zeros([BLOCK], tl.int64)
            tl.store(out_labels + slot, lab, mask=take)
        kept += tl.sum(take.to(tl.int32))

        # (When max_out cut this step short the walk ends here, so `bits` is exact below.)
        if (bits != 0) & (kept < max_out):
            for w0 in range(blk + 1, blocks, CHUNK):
                w = w0 + tl.arange(0, CHUNK)
                live = w < blocks
                row = step + w
                hits = tl.zeros([CHUNK], tl.int64)
                for r in tl.static_range(BLOCK):
                    hits |= tl.load(row, mask=live & (((bits >> r) & 1) != 0), other=0)
                    row += words
                old = tl.load(gone + w, mask=live, other=0)
                tl.store(gone + w, old | hits, mask=live)
        blk += 1
        # The next step reads a word that other threads may just have written.
        tl.debug_barrier()

    tl.store(counts + b, kept.to(tl.int64))
    if PADDED:
        for s0 in range((kept // BLOCK) * BLOCK, max_out, BLOCK):
            s = s0 + lanes
            pad = (s >= kept) & (s < max_out)
            slot = b * max_out + s
            tl.store(out_index + slot, tl.full([BLOCK], -1, tl.int64), mask=pad)
            tl.store(out_labels + slot, tl.full([BLOCK], -1, tl.int64), mask=pad)
            tl.store(out_scores + slot, tl.zeros([BLOCK], out_scores.dtype.element_ty), mask=pad)
            for c in tl.static_range(4):
                tl.store(out_boxes + slot * 4 + c, tl.zeros([BLOCK], out_boxes.dtype.element_ty),
                         mask=pad)


def suppression_mask(boxes: torch.Tensor, order: torch.Tensor, labels: torch.Tensor | None,
                     n_valid: torch.Tensor | None, iou_threshold: float,
                     cuda_rules: bool | None = None) -> torch.Tensor:
    """The mask kernel's output, (B, 64 W, W) int64 with W = ceil(M / 64): bit c of [b, i, j]
    is set when position i of order[b] suppresses position 64 j + c (i < 64 j + c < n, where n
    is min(n_valid[b], M), or M). Words of rows >= n and of tiles below the diagonal are
    unspecified. Arguments as :func:`nms_padded` (``n_valid`` None: every position)."""
    batch, m = order.shape
    words = triton.cdiv(m, BLOCK)
    if words > MAX_GRID:
        raise ValueError(f"boxes has {m} boxes per image; at most {MAX_GRID * BLOCK:,} are supported")
    if batch > MAX_GRID:
        raise ValueError(f"boxes has {batch} images; at most {MAX_GRID:,} are supported")
    if cuda_rules is None:
        cuda_rules = boxes.device.type == "cuda"
    dtype = boxes.dtype
    mask = torch.empty(batch, words * BLOCK, words, dtype=torch.int64, device=boxes.device)
    if mask.numel() == 0:
        return mask
    lab = labels if labels is not None else order
    _mask_kernel[(words, words, batch)](
        boxes, boxes.stride(0), boxes.stride(1), boxes.stride(2), order, order.stride(0),
        lab, lab.stride(0), lab.stride(1), n_valid if n_valid is not None else order, mask, m,
        words, threshold_for(iou_threshold, dtype, cuda_rules),
        HAS_LABELS=labels is not None, HAS_VALID=n_valid is not None,
        ACC=tl.float64 if dtype == torch.float64 else tl.float32, CUDA=cuda_rules,
        LOW=cuda_rules and dtype in (torch.float16, torch.bfloat16),
        IS64=dtype == torch.float64, BLOCK=BLOCK, num_warps=4, enable_fp_fusion=False)
    return mask


def _launch(boxes: torch.Tensor, order: torch.Tensor, labels: torch.Tensor | None,
            n_valid: torch.Tensor | None, iou_threshold: float, max_out: int,
            cuda_rules: bool | None, padded: tuple | None):
    batch, m = order.shape
    dev = boxes.device
    index = torch.empty(batch, max_out, dtype=torch.int64, device=dev)
    if batch == 0 or m == 0 or max_out == 0:
        return index, torch.zeros(batch, dtype=torch.int64, device=dev)
    counts = torch.empty(batch, dtype=torch.int64, device=dev)  # the walk writes every image's
    mask = suppression_mask(boxes, order, labels, n_valid, iou_threshold, cuda_rules)
    words = mask.shape[2]
    removed = torch.empty(batch, words, dtype=torch.int64, device=dev)
    lab = labels if labels is not None else order
    if padded is None:
        scores = out_boxes = out_scores = out_labels = index
        ssb = ssn = 0
    else:
        scores, out_boxes, out_scores, out_labels = padded
        ssb, ssn = scores.stride()
    _reduce_kernel[(batch,)](
        mask, removed, n_valid if n_valid is not None else counts, order, order.stride(0), m,
        words, max_out, index, counts, boxes, boxes.stride(0), boxes.stride(1), boxes.stride(2),
        scores, ssb, ssn, lab, lab.stride(0), lab.stride(1), out_boxes, out_scores, out_labels,
        HAS_VALID=n_valid is not None, PADDED=padded is not None,
        HAS_LABELS=labels is not None, BLOCK=BLOCK, CHUNK=CHUNK, num_warps=REDUCE_WARPS)
    return index, counts


def nms_keep(boxes: torch.Tensor, order: torch.Tensor, labels: torch.Tensor | None,
             iou_threshold: float, *, cuda_rules: bool | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS of B images, every box a candidate (arguments checked by mlperf_fast.ops.nms).

    Args:
        boxes: (B, N, 4) (x1, y1, x2, y2), any float dtype and strides.
        order: (B, N) int64, each image's box indices by descending score (unit stride in N).
        labels: (B, N) integers, any strides: only equal labels suppress each other; or None.
        iou_threshold: suppress when IoU > this.
        cuda_rules: decide as torchvision's CUDA kernel (True) or CPU kernel (False); None: by
            the tensors' device.

    Returns:
        (indices (B, N) int64, counts (B,) int64): image b kept indices[b, :counts[b]], in score
        order; entries past counts[b] are unspecified.
    """
    return _launch(boxes, order, labels, None, iou_threshold, order.shape[1], cuda_rules, None)


def nms_padded(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None,
               order: torch.Tensor, n_valid: torch.Tensor, iou_threshold: float, k: int, *,
               cuda_rules: bool | None = None) -> tuple[torch.Tensor, ...]:
    """The padded form: NMS over the first min(n_valid[b], M) boxes of order[b], K slots each.

    Args:
        boxes: (B, N, 4), scores (B, N) float and labels (B, N) integer or None, any strides.
        order: (B, M) int64 box indices by descending score, M <= N (unit stride in M).
        n_valid: (B,) int64, the candidates of each image (a prefix of its order).
        iou_threshold: suppress when IoU > this.
        k: slots per image, at most M.

    Returns:
        (boxes (B, K, 4), scores (B, K), labels (B, K) int64, indices (B, K) int64, counts (B,)
        int64), padded past counts[b] with box 0, score 0, label -1, index -1.
    """
    batch = boxes.shape[0]
    dev = boxes.device
    out_boxes = torch.empty(batch, k, 4, dtype=boxes.dtype, device=dev)
    out_scores = torch.empty(batch, k, dtype=scores.dtype, device=dev)
    out_labels = torch.empty(batch, k, dtype=torch.int64, device=dev)
    # Every slot is written by the walk or its padding (M = 0 means K = 0: nothing to write).
    index, counts = _launch(boxes, order, labels, n_valid, iou_threshold, k, cuda_rules,
                            (scores, out_boxes, out_scores, out_labels))
    return out_boxes, out_scores, out_labels, index, counts
