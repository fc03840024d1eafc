"""Triton sigmoid focal loss (RetinaNet's classification loss): forward and backward, each one
pass over the logits and targets.

Forward with reduction "sum" or "mean" writes one partial sum per program, summed afterwards in
a fixed order (deterministic); with "none" it writes the loss per element. Backward recomputes
everything it needs from the logits and targets instead of saving intermediates, so the loss
holds no memory between forward and backward and each pass reads the inputs once.

Math, for logit x, target t, p = sigmoid(x), q = 1 - p = sigmoid(-x):
  ce   = max(x, 0) - x t + log1p(exp(-|x|))            (binary cross-entropy with logits)
  m    = 1 - p_t = p (1 - t) + q t                      (torchvision: 1 - (p t + q (1 - t)))
  a_t  = alpha t + (1 - alpha)(1 - t), or 1 when alpha < 0
  loss = a_t ce m^gamma
  dloss/dx = a_t [(p - t) m^gamma + gamma ce m^(gamma - 1) p q (1 - 2 t)]
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


@triton.jit
def _power(m, e):
    # m ** e for m >= 0, with 0 ** 0 = 1 and 0 ** e = 0 otherwise (where it multiplies p q = 0).
    safe = tl.where(m > 0, m, 1.0)
    return tl.where(m > 0, tl.exp(e * tl.log(safe)), tl.where(e == 0, 1.0, 0.0))


@triton.jit
def _terms(x, t, alpha, gamma):
    e = tl.exp(-tl.abs(x))
    # log1p(e) for e in (0, 1] without libdevice: log(1 + e) corrected by e / ((1 + e) - 1).
    u = 1.0 + e
    log1p_e = tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))
    ce = tl.maximum(x, 0.0) - x * t + log1p_e
    p = tl.where(x >= 0, 1.0 / u, e / u)
    q = tl.where(x >= 0, e / u, 1.0 / u)
    m = p * (1.0 - t) + q * t
    a_t = tl.where(alpha >= 0, alpha * t + (1.0 - alpha) * (1.0 - t), 1.0)
    return ce, p, q, m, a_t


@triton.jit
def _forward(x_ptr, t_ptr, out_ptr, n, alpha, gamma,
             REDUCE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(ACC)
    ce, p, q, m, a_t = _terms(x, t, alpha, gamma)
    loss = a_t * ce * _power(m, gamma)
    if REDUCE == 0:
        tl.store(out_ptr + offs, loss.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), axis=0))


@triton.jit
def _backward(g_ptr, x_ptr, t_ptr, dx_ptr, n, alpha, gamma, scale,
              REDUCE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(ACC)
    if REDUCE == 0:
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    else:
        g = tl.load(g_ptr).to(ACC) * scale  # the scalar loss's gradient, 1/n for "mean"
    ce, p, q, m, a_t = _terms(x, t, alpha, gamma)
    d = (p - t) * _power(m, gamma) + gamma * ce * _power(m, gamma - 1.0) * p * q * (1.0 - 2.0 * t)
    tl.store(dx_ptr + offs, (g * a_t * d).to(dx_ptr.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def forward(inputs: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float,
            reduction: str) -> torch.Tensor:
    """The loss; inputs and targets contiguous, same shape (arguments already checked)."""
    n = inputs.numel()
    red = REDUCTIONS[reduction]
    grid = (triton.cdiv(n, BLOCK),)
    acc_dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    if red == 0:
        out = torch.empty_like(inputs)
        if n:
            _forward[grid](inputs, targets, out, n, float(alpha), float(gamma),
                           REDUCE=0, BLOCK=BLOCK, ACC=_acc(inputs.dtype), num_warps=8)
        return out
    partial = torch.empty(grid[0], dtype=acc_dtype, device=inputs.device)
    if n:
        _forward[grid](inputs, targets, partial, n, float(alpha), float(gamma),
                       REDUCE=red, BLOCK=BLOCK, ACC=_acc(inputs.dtype), num_warps=8)
    total = partial.sum()
    if red == 1:
        total = total / n  # torch's mean of an empty tensor is NaN: 0 / 0 here too
    return total.to(inputs.dtype)


def backward(grad: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, alpha: float,
             gamma: float, reduction: str) -> torch.Tensor:
    """d loss / d inputs times ``grad`` (same shape as the loss)."""
    n = inputs.numel()
    red = REDUCTIONS[reduction]
    dx = torch.empty_like(inputs)
    if n:
        grad = grad.contiguous()
        scale = 1.0 / n if red == 1 else 1.0
        _backward[(triton.cdiv(n, BLOCK),)](grad, inputs, targets, dx, n, float(alpha),
                                            float(gamma), scale, REDUCE=red, BLOCK=BLOCK,
                                            ACC=_acc(inputs.dtype), num_warps=8)
    return dx
