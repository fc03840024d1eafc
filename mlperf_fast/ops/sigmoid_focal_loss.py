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

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op

REDUCTIONS = ("none", "mean", "sum")


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "none", *,
                       backend: str = "auto") -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss.

    Args:
        inputs: logits of any shape, float32, float64, float16 or bfloat16.
        targets: same shape, a float dtype: 1 for the positive class, 0 for negatives (soft
            targets in [0, 1] also follow the formula).
        alpha: weight of positives in [0, 1]; -1 for no weighting (torchvision's convention).
        gamma: focusing exponent, >= 0.
        reduction: "none" (the loss per element, inputs' shape and dtype), "mean" or "sum"
            (0-dim, inputs' dtype; accumulated in float32, float64 for float64 inputs).
        backend: "auto" (Triton on a GPU, else torch), "triton" or "torch".

    Returns:
        The loss, differentiable with respect to ``inputs`` (and ``targets``, through the torch
        path, which the fused path hands over to when targets require grad).
    """
    for name, t in (("inputs", inputs), ("targets", targets)):
        _checks.float_tensor(t, name)
    if targets.shape != inputs.shape:
        raise _checks.ArgumentValueError(f"targets has shape {tuple(targets.shape)} but inputs "
                                         f"has shape {tuple(inputs.shape)}")
    _checks.same_device(targets, "targets", inputs, "inputs")
    alpha = _checks.real(alpha, "alpha", lo=-1.0, hi=1.0)
    if -1.0 < alpha < 0.0:
        raise _checks.ArgumentValueError(f"alpha must lie in [0, 1], or be -1 for no weighting; "
                                         f"got {alpha}")
    gamma = _checks.real(gamma, "gamma", lo=0.0, allow_inf=False)
    if reduction not in REDUCTIONS:
        # torchvision's wording, which callers match on.
        raise _checks.ArgumentValueError(
            f"Invalid value for reduction: {reduction!r}; supported reduction modes are "
            "'none', 'mean' and 'sum'")
    chosen = SIGMOID_FOCAL_LOSS.choose(inputs.device, backend)
    if targets.requires_grad:
        chosen = "torch"  # the fused backward differentiates with respect to the inputs only
    return SIGMOID_FOCAL_LOSS.kernel(chosen)(inputs, targets, alpha, gamma, reduction)


def sigmoid_focal_loss_torch(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                             gamma: float = 2.0, reduction: str = "none") -> torch.Tensor:
    """The pure-PyTorch implementation (torchvision's formula): same contract, float16 and
    bfloat16 computed in float32 as the kernel does."""
    dtype = inputs.dtype
    if dtype in (torch.float16, torch.bfloat16):
        inputs, targets = inputs.float(), targets.float()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    # 1 - p_t written as sigmoid(x) (1 - t) + sigmoid(-x) t: equal to torchvision's 1 - p_t, but
    # without its cancellation, which rounds a confident logit's 1 - p_t to 0 in float32 and, for
    # gamma < 1, turns the gradient of (1 - p_t) ** gamma into 0 * inf = NaN. The floor keeps the
    # same from happening where even sigmoid(-|x|) underflows (|x| > 103); the term is 0 there.
    one_minus_p_t = torch.sigmoid(inputs) * (1 - targets) + torch.sigmoid(-inputs) * targets
    if gamma < 1:
        one_minus_p_t = one_minus_p_t.clamp_min(torch.finfo(one_minus_p_t.dtype).tiny)
    loss = ce * (one_minus_p_t ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(dtype)


# The Triton path as torch.library ops (fakes in _fakes.py), the backward hand-written.


def _triton_forward(inputs, targets, alpha, gamma, reduction):
    from mlperf_fast.kernels import sigmoid_focal_loss as kernel

    return kernel.forward(inputs.contiguous(), targets.contiguous(), alpha, gamma, reduction)


def _triton_backward(grad, inputs, targets, alpha, gamma, reduction):
    from mlperf_fast.kernels import sigmoid_focal_loss as kernel

    return kernel.backward(grad, inputs.contiguous(), targets.contiguous(), alpha, gamma,
                           reduction).view(inputs.shape)


def _setup_context(ctx, inputs, output):
    x, t, alpha, gamma, reduction = inputs
    ctx.save_for_backward(x, t)
    ctx.args = (alpha, gamma, reduction)


def _backward(ctx, grad):
    x, t = ctx.saved_tensors
    return sigmoid_focal_loss_triton_backward(grad, x, t, *ctx.args), None, None, None, None


_SCHEMA = "Tensor inputs, Tensor targets, float alpha, float gamma, str reduction"
sigmoid_focal_loss_triton_backward = custom_op(
    "sigmoid_focal_loss_triton_backward", f"(Tensor grad, {_SCHEMA}) -> Tensor", _triton_backward)
sigmoid_focal_loss_triton = custom_op(
    "sigmoid_focal_loss_triton", f"({_SCHEMA}) -> Tensor", _triton_forward,
    backward=_backward, setup_context=_setup_context)
SIGMOID_FOCAL_LOSS = register_op("sigmoid_focal_loss", triton=sigmoid_focal_loss_triton,
                                 torch_fn=sigmoid_focal_loss_torch)
