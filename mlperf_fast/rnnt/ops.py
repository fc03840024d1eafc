"""The swappable pieces of the RNN-T step: the transducer loss and the LAMB optimizer.

Each is taken from ``mlperf_fast.ops`` / ``mlperf_fast.optim`` when the package provides it (the
fused kernels), and otherwise from the plain-PyTorch versions here, which define the semantics:
``rnnt_loss`` has torchaudio.functional.rnnt_loss's signature and ``Lamb`` apex's FusedLAMB's.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

import torch

from mlperf_fast.rnnt.config import OptimConfig

_NEG = -1e30  # a finite "log 0": keeps logaddexp's gradient finite where both terms are empty


def rnnt_loss_torch(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                    target_lengths: torch.Tensor, blank: int = -1, clamp: float = -1,
                    reduction: str = "mean", fused_log_softmax: bool = True) -> torch.Tensor:
    """The RNN-T loss (negative log-likelihood of ``targets`` under the transducer lattice).

    logits (B, T, U+1, V) float (computed in float32), targets (B, U) int32,
    logit_lengths (B,) int32 (<= T), target_lengths (B,) int32 (<= U), blank in [-V, V),
    reduction "none" (B,) | "mean" (over the batch) | "sum". The forward variables are computed
    over the lattice's anti-diagonals (all cells with t + u = d at once), so the Python loop runs
    T + U - 1 times; gradients come from autograd through the recursion.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, T, U+1, V), got shape {tuple(logits.shape)}")
    b, t_max, u1, v = logits.shape
    if targets.shape != (b, u1 - 1):
        raise ValueError(f"targets must be ({b}, {u1 - 1}), got {tuple(targets.shape)}")
    if targets.dtype != torch.int32 or logit_lengths.dtype != torch.int32 \
            or target_lengths.dtype != torch.int32:
        raise TypeError("targets, logit_lengths and target_lengths must be int32")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if not -v <= blank < v:
        raise ValueError(f"blank {blank} is out of range for {v} classes")
    blank = blank % v
    if b == 0:
        out = logits.new_zeros((0,), dtype=torch.float32)
        return out if reduction == "none" else out.sum()
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > t_max:
        raise ValueError(f"logit_lengths must be in [1, {t_max}]")
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > u1 - 1:
        raise ValueError(f"target_lengths must be in [0, {u1 - 1}]")

    x = logits.float()
    lp = torch.log_softmax(x, dim=-1) if fused_log_softmax else x
    if clamp > 0:  # torchaudio clamps the gradient of the logits; the forward is unchanged
        lp = _ClampGrad.apply(lp, float(clamp))
    lp_blank = lp[..., blank]  # (B, T, U+1)
    tgt = targets.long().clamp(0, v - 1)
    lp_emit = torch.gather(lp[:, :, :-1, :], 3,
                           tgt[:, None, :, None].expand(b, t_max, u1 - 1, 1)).squeeze(3)  # (B,T,U)

    # skew: cell (t, u) goes to (d = t + u, u); cells off the lattice hold _NEG
    dev = logits.device
    n_diag = t_max + u1 - 1
    d_idx = torch.arange(n_diag, device=dev)[:, None]
    u_idx = torch.arange(u1, device=dev)[None, :]
    t_of = d_idx - u_idx  # (D, U+1)
    valid = (t_of >= 0) & (t_of < t_max)
    t_clamped = t_of.clamp(0, t_max - 1)

    def skew(a: torch.Tensor, width: int) -> torch.Tensor:  # (B, T, W) -> (B, D, W)
        g = a[:, t_clamped[:, :width], u_idx[:, :width].expand(n_diag, width)]
        return g.masked_fill(~valid[None, :, :width], _NEG)

    blank_s, emit_s = skew(lp_blank, u1), skew(lp_emit, u1 - 1)
    neg = x.new_full((b, 1), _NEG)
    alpha = torch.cat([x.new_zeros((b, 1)), x.new_full((b, u1 - 1), _NEG)], dim=1)
    alphas = [alpha]
    for d in range(1, n_diag):
        from_blank = alpha + blank_s[:, d - 1]
        from_emit = torch.cat([neg, alpha[:, :-1] + emit_s[:, d - 1]], dim=1)
        alpha = torch.logaddexp(from_blank, from_emit).masked_fill(~valid[d][None], _NEG)
        alphas.append(alpha)
    stacked = torch.stack(alphas, dim=1)  # (B, D, U+1)
    tl, ul = logit_lengths.long(), target_lengths.long()
    rows = torch.arange(b, device=dev)
    final = stacked[rows, tl - 1 + ul, ul] + lp_blank[rows, tl - 1, ul]
    loss = -final
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class _ClampGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, clamp: float) -> torch.Tensor:
        ctx.clamp = clamp
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g.clamp(-ctx.clamp, ctx.clamp), None


class Lamb(torch.optim.Optimizer):
    """LAMB as apex.optimizers.FusedLAMB computes it (adam_w_mode, grad averaging, bias
    correction): the gradients of all groups are first scaled so that their global L2 norm is
    at most ``max_grad_norm``; then per tensor, Adam's update plus decoupled weight decay,
    scaled by the trust ratio ||p|| / ||update|| (1 when either norm is 0; the ratio is applied
    where weight_decay != 0, as apex does without use_nv_lamb)."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, max_grad_norm: float = 1.0,
                 bias_correction: bool = True) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError("lr, eps and weight_decay must be non-negative")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction))
        self.max_grad_norm = max_grad_norm

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure() if closure is not None else None
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return loss
        global_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        clip = torch.where(global_norm > self.max_grad_norm,
                           global_norm / self.max_grad_norm, torch.ones_like(global_norm)) \
            if self.max_grad_norm > 0 else torch.ones_like(global_norm)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                step = state["step"]
                g = p.grad.float() / clip
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if group["bias_correction"]:
                    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
                else:
                    bc1 = bc2 = 1.0
                update = (m / bc1) / ((v / bc2).sqrt() + group["eps"])
                pf = p.float()
                if group["weight_decay"] != 0:
                    update = update + group["weight_decay"] * pf
                    w_norm = torch.linalg.vector_norm(pf)
                    u_norm = torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                        torch.ones_like(w_norm))
                else:
                    ratio = 1.0
                p.copy_(pf - group["lr"] * ratio * update)
        return loss


def _optional(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def rnnt_loss() -> Callable[..., torch.Tensor]:
    """mlperf_fast.ops.rnnt_loss when the package has it, else rnnt_loss_torch."""
    return _optional("mlperf_fast.ops.rnnt_loss", "rnnt_loss") or rnnt_loss_torch


def lamb_class() -> type[torch.optim.Optimizer]:
    """mlperf_fast.optim.FusedLAMB when the package has it, else Lamb."""
    return _optional("mlperf_fast.optim", "FusedLAMB") or Lamb


def fused_ops_available() -> bool:
    """Whether mlperf_fast.ops has the fused joint + loss and the batched greedy decoder."""
    return (_optional("mlperf_fast.ops", "transducer_joint_loss") is not None
            and _optional("mlperf_fast.ops", "rnnt_greedy_decode") is not None)


def make_lamb(params: Iterable, o: OptimConfig,
              cls: type[torch.optim.Optimizer] | None = None) -> torch.optim.Optimizer:
    """``cls`` (default :func:`lamb_class`) over ``params`` (tensors or groups) with the LAMB
    hyper-parameters of ``o``: lr, betas, eps, weight decay and the gradient-norm clip."""
    return (cls or lamb_class())(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                 weight_decay=o.weight_decay, max_grad_norm=o.clip_norm)


def lamb_name() -> str:
    cls = lamb_class()
    return f"{cls.__module__}.{cls.__name__}"


__all__ = ["Lamb", "fused_ops_available", "lamb_class", "lamb_name", "make_lamb", "rnnt_loss",
           "rnnt_loss_torch"]
