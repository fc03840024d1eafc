"""Triton table-batched embedding-bag forward: the twin of tbe_forward_kernel in
csrc/table_batched_embedding/table_batched_embedding_cuda.cu.

One program per (table, bag): the row's columns as one block (masked to the table's dim), the
bag's indices walked ROWS at a time so that ROWS row loads are in flight together, accumulated in
float32 (float64 for float64 weights). Bad indices (outside the weights) contribute nothing.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ROWS = 4


@triton.jit
def _tbe_forward(
    weights, w_numel, w_off, d_off, indices, offsets, n, psw, out, B, total_D,
    HAS_PSW: tl.constexpr, MEAN: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
    ACC: tl.constexpr,
):
    bag = tl.program_id(0).to(tl.int64)
    t = bag // B
    b = bag % B
    d_lo = tl.load(d_off + t)
    D = tl.load(d_off + t + 1) - d_lo
    base = tl.load(w_off + t)
    begin = tl.minimum(tl.maximum(tl.load(offsets + bag).to(tl.int64), 0), n)
    end = tl.minimum(tl.maximum(tl.load(offsets + bag + 1).to(tl.int64), 0), n)
    end = tl.maximum(begin, end)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    acc = tl.zeros([BLOCK_D], ACC)
    for k0 in range(begin, end, ROWS):
        ks = k0 + tl.arange(0, ROWS)
        k_mask = ks < end
        idx = tl.load(indices + ks, mask=k_mask, other=0).to(tl.int64)
        row = base + idx * D
        ok = k_mask & (idx >= 0) & (row + D <= w_numel)
        if HAS_PSW:
            s = tl.load(psw + ks, mask=ok, other=0.0).to(ACC)
        else:
            s = tl.where(ok, 1.0, 0.0).to(ACC)
        vals = tl.load(weights + row[:, None] + cols[None, :], mask=ok[:, None] & col_mask[None, :],
                       other=0.0).to(ACC)
        acc += tl.sum(vals * s[:, None], axis=0)
    if MEAN:
        cnt = (end - begin).to(ACC)
        acc = acc / tl.maximum(cnt, 1.0)
    tl.store(out + b * total_D + d_lo + cols, acc.to(out.dtype.element_ty), mask=col_mask)


def tbe_forward(weights: torch.Tensor, w_off: torch.Tensor, d_off: torch.Tensor,
                indices: torch.Tensor, offsets: torch.Tensor, mean: bool,
                per_sample_weights: torch.Tensor | None, total_D: int, max_D: int) -> torch.Tensor:
    """Same contract as torch.ops.mlperf_fast.tbe_forward (arguments already checked)."""
    T = w_off.numel()
    B = (offsets.numel() - 1) // T
    out = torch.empty(B, total_D, dtype=weights.dtype, device=weights.device)
    if T * B == 0 or total_D == 0:
        return out
    psw = None if per_sample_weights is None else per_sample_weights.to(torch.float32).contiguous()
    acc = tl.float64 if weights.dtype == torch.float64 else tl.float32
    _tbe_forward[(T * B,)](
        weights, weights.numel(), w_off, d_off, indices, offsets, indices.numel(),
        psw if psw is not None else weights, out, B, total_D,
        HAS_PSW=psw is not None, MEAN=mean, BLOCK_D=triton.next_power_of_2(max_D), ROWS=ROWS,
        ACC=acc,
    )
    return out
