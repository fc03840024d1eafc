"""Triton bias + dropout + residual + LayerNorm (BERT's attention-output and output layers):
forward and backward, each one pass over the rows.

Forward, one program per row of H: u = x + bias; dropout keeps an element where a counter-based
uniform (Philox through tl.rand, keyed by the seed and the element's flat offset row * H + col)
is >= p and scales it by 1 / (1 - p); s = u + residual; the row's mean and 1 / std of s are
kept (float32, float64 for float64 x) and out = (s - mean) rstd weight + ln_bias is written. The
mask is never stored: the backward draws it again from the same seed and offsets, and recomputes
s from the inputs, so nothing but the inputs, mean, rstd and the seed lies between the passes.

Backward, with xhat = (s - mean) rstd and dy = g weight:
  ds = rstd (dy - mean(dy) - xhat mean(dy xhat))       (means over the row)
  dresidual = ds, dx = ds keep / (1 - p), dbias = sum over rows of dx,
  dweight = sum over rows of g xhat, dln_bias = sum over rows of g.
Each program walks a fixed run of rows, accumulating the three column sums in registers, and
writes them to (programs, H) buffers summed afterwards in a fixed order: deterministic, no
atomics.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# The backward's programs: enough to fill a GPU several times over, few enough that their
# (programs, H) partial sums stay small next to the activations.
BACKWARD_PROGRAMS = 512


@triton.jit
def _keep(seed, offs, p):
    # The dropout mask, drawn identically by forward, backward and dropout_keep.
    return tl.rand(seed, offs) >= p


@triton.jit
def _forward(x_ptr, b_ptr, r_ptr, w_ptr, lb_ptr, seed_ptr, out_ptr, mean_ptr, rstd_ptr, H,
             p, scale, eps, DROPOUT: tl.constexpr, ACC: tl.constexpr, BLOCK_H: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < H
    offs = row * H + cols
    u = tl.load(x_ptr + offs, mask=cmask, other=0.0).to(ACC) + \
        tl.load(b_ptr + cols, mask=cmask, other=0.0).to(ACC)
    if DROPOUT:
        u = tl.where(_keep(tl.load(seed_ptr), offs, p), u * scale, 0.0)
    s = u + tl.load(r_ptr + offs, mask=cmask, other=0.0).to(ACC)
    mean = tl.sum(s, axis=0) / H  # masked columns load 0 (and bias 0): they add nothing
    d = tl.where(cmask, s - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / H + eps)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
    lb = tl.load(lb_ptr + cols, mask=cmask, other=0.0).to(ACC)
    tl.store(out_ptr + offs, (d * rstd * w + lb).to(out_ptr.dtype.element_ty), mask=cmask)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _backward(g_ptr, x_ptr, b_ptr, r_ptr, w_ptr, seed_ptr, mean_ptr, rstd_ptr, dx_ptr, dr_ptr,
              db_part, dw_part, dlb_part, rows, H, rows_per_program, p, scale,
              DROPOUT: tl.constexpr, ACC: tl.constexpr, BLOCK_H: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < H
    b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(ACC)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
    if DROPOUT:
        seed = tl.load(seed_ptr)
    db = tl.zeros((BLOCK_H,), dtype=ACC)
    dw = tl.zeros((BLOCK_H,), dtype=ACC)
    dlb = tl.zeros((BLOCK_H,), dtype=ACC)
    first = pid.to(tl.int64) * rows_per_program
    for i in range(rows_per_program):
        row = first + i
        if row < rows:
            offs = row * H + cols
            u = tl.load(x_ptr + offs, mask=cmask, other=0.0).to(ACC) + b
            if DROPOUT:
                keep = _keep(seed, offs, p)
                u = tl.where(keep, u * scale, 0.0)
            s = u + tl.load(r_ptr + offs, mask=cmask, other=0.0).to(ACC)
            mean = tl.load(mean_ptr + row)
            rstd = tl.load(rstd_ptr + row)
            xhat = tl.where(cmask, (s - mean) * rstd, 0.0)
            g = tl.load(g_ptr + offs, mask=cmask, other=0.0).to(ACC)
            dy = g * w
            c1 = tl.sum(dy * xhat, axis=0) / H
            c2 = tl.sum(dy, axis=0) / H
            ds = tl.where(cmask, (dy - xhat * c1 - c2) * rstd, 0.0)
            tl.store(dr_ptr + offs, ds.to(dr_ptr.dtype.element_ty), mask=cmask)
            if DROPOUT:
                du = tl.where(keep, ds * scale, 0.0)
            else:
                du = ds
            tl.store(dx_ptr + offs, du.to(dx_ptr.dtype.element_ty), mask=cmask)
            db += du
            dw += g * xhat
            dlb += g
    part = pid.to(tl.int64) * H + cols
    tl.store(db_part + part, db, mask=cmask)
    tl.store(dw_part + part, dw, mask=cmask)
    tl.store(dlb_part + part, dlb, mask=cmask)


@triton.jit
def _dropout_keep(seed_ptr, keep_ptr, n, p, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(keep_ptr + offs, _keep(tl.load(seed_ptr), offs, p).to(tl.int8), mask=mask)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _launch(H: int) -> tuple[int, int]:
    block = triton.next_power_of_2(H)
    return block, min(16, max(1, block // 256))


def forward(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
            ln_bias: torch.Tensor, p: float, seed: torch.Tensor | None, eps: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out in x's dtype, mean (rows,), rstd (rows,)); x and residual contiguous (..., H), the
    rest contiguous (H,); dropout with probability ``p`` (0: none) keyed by ``seed`` (a (1,)
    int64 tensor on x's device, or None when p is 0)."""
    H = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    acc = _acc_dtype(x.dtype)
    out = torch.empty_like(x)
    mean = torch.empty(rows, dtype=acc, device=x.device)
    rstd = torch.empty(rows, dtype=acc, device=x.device)
    if rows and H:
        block, warps = _launch(H)
        dropout = p > 0
        _forward[(rows,)](x, bias, residual, weight, ln_bias, seed if dropout else x, out, mean,
                          rstd, H, float(p), 1.0 / (1.0 - p), float(eps), DROPOUT=dropout,
                          ACC=_acc(x.dtype), BLOCK_H=block, num_warps=warps)
    return out, mean, rstd


def backward(grad: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
             weight: torch.Tensor, ln_bias: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
             p: float, seed: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dbias, dresidual, dweight, dln_bias), each in its input's dtype; every tensor
    contiguous, as the forward was given them."""
    H = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    dx = torch.empty_like(x)
    dr = torch.empty_like(residual)
    if not (rows and H):
        return (dx, torch.zeros_like(bias), dr.zero_(), torch.zeros_like(weight),
                torch.zeros_like(ln_bias))
    acc = _acc_dtype(x.dtype)
    programs = min(rows, BACKWARD_PROGRAMS)
    per = triton.cdiv(rows, programs)
    programs = triton.cdiv(rows, per)
    parts = torch.empty((3, programs, H), dtype=acc, device=x.device)
    block, warps = _launch(H)
    dropout = p > 0
    _backward[(programs,)](grad, x, bias, residual, weight, seed if dropout else x, mean, rstd,
                           dx, dr, parts[0], parts[1], parts[2], rows, H, per, float(p),
                           1.0 / (1.0 - p), DROPOUT=dropout, ACC=_acc(x.dtype), BLOCK_H=block,
                           num_warps=warps)
    db, dw, dlb = (part.sum(0) for part in parts)  # three tensors, not views of one
    return dx, db.to(bias.dtype), dr, dw.to(weight.dtype), dlb.to(ln_bias.dtype)


def dropout_keep(seed: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """The mask the kernels draw for an input of ``shape`` (contiguous) with ``seed`` and
    ``p``: bool, True where an element is kept. For tests and debugging."""
    n = 1
    for s in shape:
        n *= s
    keep = torch.empty(n, dtype=torch.int8, device=seed.device)
    if n:
        block = 1024
        _dropout_keep[(triton.cdiv(n, block),)](seed, keep, n, float(p), BLOCK=block)
    return keep.view(shape).bool()
