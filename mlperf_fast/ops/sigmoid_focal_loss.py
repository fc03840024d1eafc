"""Sigmoid focal loss (RetinaNet), forward and backward fused: a drop-in for
torchvision.ops.sigmoid_focal_loss.

torchvision builds the loss from about ten elementwise kernels and autograd keeps their
intermediates; here the forward is one pass over logits and targets (a fixed-order partial sum
for "sum"/"mean") and the backward another, recomputing what it needs, so nothing but the
inputs is kept between them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mlperf_fast.ops._library import choose_triton_or_torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
REDUCTIONS = ("none", "mean", "sum")


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "none", *,
                       backend: str = "auto") -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss.

    Args:
        inputs: logits of any shape, float32, float64, float16 or bfloat16.
        targets: same shape, a float dtype: 1 for the positive class, 0 for negatives (soft
            targets in [0, 1] also follow the formula).
        alpha: weight of positives in [0, 1]; negative for no weighting.
        gamma: focusing exponent, >= 0.
        reduction: "none" (the loss per element, inputs' shape and dtype), "mean" or "sum"
            (0-dim, inputs' dtype; accumulated in float32, float64 for float64 inputs).
        backend: "auto" (Triton on a GPU, else torch), "triton" or "torch".

    Returns:
        The loss, differentiable with respect to ``inputs`` (and ``targets``, through the torch
        path, which the fused path hands over to when targets require grad).
    """
    for name, t in (("inputs", inputs), ("targets", targets)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise ValueError(f"{name} is a {t.layout} tensor; only dense tensors are supported")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; expected float32, float64, float16 or "
                            "bfloat16")
    if targets.shape != inputs.shape:
        raise ValueError(f"targets has shape {tuple(targets.shape)} but inputs has shape "
                         f"{tuple(inputs.shape)}")
    if targets.device != inputs.device:
        raise ValueError(f"targets is on {targets.device} but inputs is on {inputs.device}")
    for name, v in (("alpha", alpha), ("gamma", gamma)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a float, got {type(v).__name__}")
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    chosen = choose_triton_or_torch("sigmoid_focal_loss", inputs.device, backend)
    if chosen == "torch" or targets.requires_grad:
        return sigmoid_focal_loss_torch(inputs, targets, float(alpha), float(gamma), reduction)
    return torch.ops.mlperf_fast.sigmoid_focal_loss_triton(
        inputs, targets, float(alpha), float(gamma), reduction)


def sigmoid_focal_loss_torch(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                             gamma: float = 2.0, reduction: str = "none") -> torch.Tensor:
    """The pure-PyTorch implementation (torchvision's formula): same contract, float16 and
    bfloat16 computed in float32 as the kernel does."""
    dtype = inputs.dtype
    if dtype in (torch.float16, torch.bfloat16):
        inputs, targets = inputs.float(), targets.float()
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(dtype)


# The Triton path as torch.library ops: opaque to torch.compile, with fake implementations and
# autograd registered here.


@torch.library.custom_op("mlperf_fast::sigmoid_focal_loss_triton", mutates_args=())
def _triton_forward(inputs: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float,
                    reduction: str) -> torch.Tensor:
    from mlperf_fast.kernels import sigmoid_focal_loss as kernel

    return kernel.forward(inputs.contiguous(), targets.contiguous(), alpha, gamma, reduction)


@_triton_forward.register_fake
def _(inputs, targets, alpha, gamma, reduction):
    return inputs.new_empty(inputs.shape if reduction == "none" else ())


@torch.library.custom_op("mlperf_fast::sigmoid_focal_loss_triton_backward", mutates_args=())
def _triton_backward(grad: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, alpha: float,
                     gamma: float, reduction: str) -> torch.Tensor:
    from mlperf_fast.kernels import sigmoid_focal_loss as kernel

    return kernel.backward(grad, inputs.contiguous(), targets.contiguous(), alpha, gamma,
                           reduction).view(inputs.shape)


@_triton_backward.register_fake
def _(grad, inputs, targets, alpha, gamma, reduction):
    return torch.empty_like(inputs, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, t, alpha, gamma, reduction = inputs
    ctx.save_for_backward(x, t)
    ctx.args = (alpha, gamma, reduction)


def _backward(ctx, grad):
    x, t = ctx.saved_tensors
    return _triton_backward(grad, x, t, *ctx.args), None, None, None, None


_triton_forward.register_autograd(_backward, setup_context=_setup_context)
