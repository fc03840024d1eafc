"""Bias + GELU (BERT's intermediate layer), forward and backward fused.

The eager chain (the bias add, F.gelu, the casts to and from float32) runs four elementwise
kernels and keeps their intermediates for autograd; here the forward is one pass over the GEMM
output and the backward another, recomputing x + bias, so that only the inputs are kept between
them. The bias gradient is reduced deterministically (fixed-order partial sums).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op

APPROXIMATIONS = ("none", "tanh")


def _check(x: object, bias: object, approximate: object) -> None:
    _checks.float_tensor(x, "x")
    _checks.float_tensor(bias, "bias")
    if x.dim() < 1:
        raise _checks.ArgumentValueError("x must have at least one dimension (..., F), got a "
                                         "0-dim tensor")
    _checks.shape(bias, "bias", (x.shape[-1],), f"(F,) = ({x.shape[-1]},), x's last dimension")
    _checks.same_device(bias, "bias", x, "x")
    _checks.choice(approximate, "approximate", APPROXIMATIONS)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "tanh", *,
              backend: str = "auto") -> torch.Tensor:
    """GELU(x + bias), as ``F.gelu(x.float() + bias.float(), approximate).to(x.dtype)``.

    Args:
        x: (..., F) float32, float64, float16 or bfloat16: a GEMM's output without its bias.
            Any strides (a non-contiguous x is copied to a contiguous one first).
        bias: (F,) any float dtype, on x's device; cast to the compute dtype.
        approximate: F.gelu's: "tanh" (BERT's) or "none" (the erf form).
        backend: "auto" (torch, until the Triton kernel is measured faster on a GPU),
            "triton" (a GPU, or TRITON_INTERPRET=1) or "torch".

    Returns:
        (..., F) in x's dtype, computed in float32 (float64 for float64 x). Differentiable with
        respect to x (gradient in x's dtype) and bias (in bias's dtype).
    """
    _check(x, bias, approximate)
    return BIAS_GELU(x.device, backend, x, bias, approximate, size=x.numel())


def bias_gelu_torch(x: torch.Tensor, bias: torch.Tensor, approximate: str = "tanh"
                    ) -> torch.Tensor:
    """The pure-PyTorch implementation: mlperf_fast.workloads.bert.model.bias_gelu's formula,
    differentiated by autograd."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    return F.gelu(x.to(dtype) + bias.to(dtype), approximate=approximate).to(x.dtype)


# The Triton path as torch.library ops (fakes in _fakes.py), the backward hand-written.


def _triton_forward(x, bias, approximate):
    from mlperf_fast.kernels import bias_gelu as kernel

    return kernel.forward(x.contiguous(), bias.contiguous(), approximate)


def _triton_backward(grad, x, bias, approximate):
    from mlperf_fast.kernels import bias_gelu as kernel

    dx, dbias = kernel.backward(grad.contiguous(), x.contiguous(), bias.contiguous(),
                                approximate)
    return dx, dbias


def _setup_context(ctx, inputs, output):
    x, bias, approximate = inputs
    ctx.save_for_backward(x, bias)
    ctx.approximate = approximate


def _backward(ctx, grad):
    x, bias = ctx.saved_tensors
    dx, dbias = bias_gelu_triton_backward(grad, x, bias, ctx.approximate)
    return dx, dbias, None


bias_gelu_triton_backward = custom_op(
    "bias_gelu_triton_backward",
    "(Tensor grad, Tensor x, Tensor bias, str approximate) -> (Tensor, Tensor)",
    _triton_backward)
bias_gelu_triton = custom_op(
    "bias_gelu_triton", "(Tensor x, Tensor bias, str approximate) -> Tensor", _triton_forward,
    backward=_backward, setup_context=_setup_context)
def _order(device_type: str, size: int) -> tuple[str, ...]:
    # auto stays on torch until benchmarks/results/ shows the Triton kernel faster on a GPU
    # (bench_bias_gelu.py has not run on one yet); backend="triton" asks for it
    return ("torch",)


BIAS_GELU = register_op("bias_gelu", triton=bias_gelu_triton, torch_fn=bias_gelu_torch,
                        order=_order)
