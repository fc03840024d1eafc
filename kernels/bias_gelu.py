"""Triton bias + GELU (BERT's intermediate layer): forward and backward, each one pass over the
GEMM output.

x is viewed as a (rows, F) row-major matrix and tiled in (BLOCK_R, BLOCK_F) blocks. The forward
reads x and bias and writes GELU(x + bias); nothing else is kept for the backward, which reads
x, bias and the incoming gradient again, recomputes u = x + bias and writes dx = g GELU'(u).
The bias gradient is the column sum of dx: every program writes its block's column sums to a
(row blocks, F) buffer in the accumulation dtype, summed over row blocks afterwards in a fixed
order, so it is deterministic (no atomics) and independent of scheduling.

Math, for u = x + bias, k = sqrt(2 / pi), c = 0.044715:
  tanh:  z = k (u + c u^3), t = tanh(z), s = (1 + t) / 2 = sigmoid(2z)
         GELU(u) = u s
         GELU'(u) = s + u (1 - t^2) k (1 + 3 c u^2) / 2,  (1 - t^2) / 2 = 2 s (1 - s)
  none:  GELU(u) = u (1 + erf(u / sqrt 2)) / 2
         GELU'(u) = (1 + erf(u / sqrt 2)) / 2 + u exp(-u^2 / 2) / sqrt(2 pi)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_R = 32
BLOCK_F = 128
APPROXIMATE = {"none": 0, "tanh": 1}

_K = 0.7978845608028654        # sqrt(2 / pi)
_C = 0.044715
_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@triton.jit
def _half_one_plus_tanh(z):
    # (1 + tanh z) / 2 = sigmoid(2z) and (1 - tanh z) / 2 = sigmoid(-2z), both from
    # e = exp(-2|z|) in (0, 1]: no cancellation where tanh z is near -1 (the tail of negative
    # inputs, whose slope GELU'(u) would otherwise lose to an ulp of 1 times |u|^3), no overflow.
    e = tl.exp(-2.0 * tl.abs(z))
    big = 1.0 / (1.0 + e)
    small = e / (1.0 + e)
    return tl.where(z >= 0, big, small), tl.where(z >= 0, small, big)


@triton.jit
def _gelu(u, TANH: tl.constexpr):
    if TANH:
        s, _ = _half_one_plus_tanh(_K * (u + _C * u * u * u))
        return u * s
    else:
        return 0.5 * u * (1.0 + tl.erf(u * _INV_SQRT2))


@triton.jit
def _gelu_grad(u, TANH: tl.constexpr):
    if TANH:
        s, s_neg = _half_one_plus_tanh(_K * (u + _C * u * u * u))
        # (1 - t^2) / 2 = 2 s (1 - s)
        return s + 2.0 * u * s * s_neg * _K * (1.0 + 3.0 * _C * u * u)
    else:
        return 0.5 * (1.0 + tl.erf(u * _INV_SQRT2)) + u * tl.exp(-0.5 * u * u) * _INV_SQRT_2PI


@triton.jit
def _forward(x_ptr, b_ptr, out_ptr, rows, F, TANH: tl.constexpr, ACC: tl.constexpr,
             BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    cmask = c < F
    mask = (r[:, None] < rows) & cmask[None, :]
    offs = r[:, None] * F + c[None, :]
    b = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    u = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC) + b[None, :]
    tl.store(out_ptr + offs, _gelu(u, TANH).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward(g_ptr, x_ptr, b_ptr, dx_ptr, db_ptr, rows, F, TANH: tl.constexpr,
              ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
    pid_r = tl.program_id(0)
    r = pid_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    cmask = c < F
    mask = (r[:, None] < rows) & cmask[None, :]
    offs = r[:, None] * F + c[None, :]
    b = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    u = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC) + b[None, :]
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    dx = g * _gelu_grad(u, TANH)
    dx_out = dx.to(dx_ptr.dtype.element_ty)
    tl.store(dx_ptr + offs, dx_out, mask=mask)
    # Masked rows load g = 0, so they add nothing. The sum is of the unrounded dx, as autograd of
    # the float32 formula sums it before casting to the bias's dtype.
    tl.store(db_ptr + pid_r.to(tl.int64) * F + c, tl.sum(dx, axis=0), mask=cmask)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def forward(x: torch.Tensor, bias: torch.Tensor, approximate: str) -> torch.Tensor:
    """GELU(x + bias) in x's dtype; x contiguous (..., F), bias (F,) (arguments checked)."""
    out = torch.empty_like(x)
    F = x.shape[-1]
    rows = x.numel() // F if F else 0
    if rows and F:
        grid = (triton.cdiv(rows, BLOCK_R), triton.cdiv(F, BLOCK_F))
        _forward[grid](x, bias, out, rows, F, TANH=APPROXIMATE[approximate] == 1,
                       ACC=_acc(x.dtype), BLOCK_R=BLOCK_R, BLOCK_F=BLOCK_F, num_warps=4)
    return out


def backward(grad: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, approximate: str
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx in x's dtype, dbias in bias's dtype); grad and x contiguous, same shape."""
    F = x.shape[-1]
    rows = x.numel() // F if F else 0
    dx = torch.empty_like(x)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if not (rows and F):
        return dx, torch.zeros_like(bias)
    blocks = triton.cdiv(rows, BLOCK_R)
    partial = torch.empty((blocks, F), dtype=acc, device=x.device)
    _backward[(blocks, triton.cdiv(F, BLOCK_F))](
        grad, x, bias, dx, partial, rows, F, TANH=APPROXIMATE[approximate] == 1,
        ACC=_acc(x.dtype), BLOCK_R=BLOCK_R, BLOCK_F=BLOCK_F, num_warps=4)
    return dx, partial.sum(0).to(bias.dtype)
