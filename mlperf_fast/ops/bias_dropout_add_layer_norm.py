"""Bias + dropout + residual add + LayerNorm (BERT's attention-output and output layers),
forward and backward fused.

The eager chain (casts, bias add, dropout, residual add, LayerNorm) runs about eight kernels and
keeps the dropout mask and the pre-norm sum for autograd. Here the forward is one pass over the
rows and the backward another: the dropout mask comes from a counter-based generator (Philox,
keyed by a seed and each element's offset), so the backward draws it again instead of reading a
stored one, and it recomputes the pre-norm sum from the inputs; between the passes only the
inputs, each row's mean and 1 / std, and the seed are kept. The column sums of the bias,
weight and LayerNorm-bias gradients are reduced deterministically (fixed-order partial sums).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op

_SEED_MAX = 2**63 - 1
# The widest row the Triton kernels hold in one program's registers (their block is the next
# power of two of H); wider rows take the torch path.
MAX_H = 16384


def _check(x, bias, residual, weight, ln_bias, p, training, eps, seed) -> tuple[float, float]:
    _checks.float_tensor(x, "x")
    if x.dim() < 1:
        raise _checks.ArgumentValueError("x must have at least one dimension (..., H), got a "
                                         "0-dim tensor")
    H = x.shape[-1]
    _checks.float_tensor(residual, "residual")
    if residual.shape != x.shape:
        raise _checks.ArgumentValueError(f"residual has shape {tuple(residual.shape)} but x has "
                                         f"shape {tuple(x.shape)}; they must match")
    _checks.same_device(residual, "residual", x, "x")
    for name, t in (("bias", bias), ("weight", weight), ("ln_bias", ln_bias)):
        _checks.float_tensor(t, name)
        _checks.shape(t, name, (H,), f"(H,) = ({H},), x's last dimension")
        _checks.same_device(t, name, x, "x")
    p = _checks.real(p, "p", lo=0.0, hi=1.0, hi_open=True)
    if not isinstance(training, bool):
        raise _checks.ArgumentTypeError(f"training must be a bool, got {type(training).__name__}")
    eps = _checks.real(eps, "eps", lo=0.0, lo_open=True, allow_inf=False)
    if isinstance(seed, torch.Tensor):
        _checks.integer_tensor(seed, "seed", (torch.int64,))
        if seed.numel() != 1:
            raise _checks.ArgumentValueError(f"seed must hold one value, got shape "
                                             f"{tuple(seed.shape)}")
        _checks.same_device(seed, "seed", x, "x")
    elif seed is not None:
        _checks.integer(seed, "seed", lo=0, hi=_SEED_MAX)
    return p, eps


def bias_dropout_add_layer_norm(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                                weight: torch.Tensor, ln_bias: torch.Tensor, p: float,
                                training: bool, eps: float,
                                seed: int | torch.Tensor | None = None, *,
                                backend: str = "auto") -> torch.Tensor:
    """LayerNorm(dropout(x + bias, p, training) + residual) over the last dimension H.

    Args:
        x: (..., H) float32, float64, float16 or bfloat16: a GEMM's output without its bias.
        bias: (H,) any float dtype: the GEMM's bias.
        residual: x's shape, any float dtype: the block's input.
        weight, ln_bias: (H,) any float dtype: the LayerNorm's affine parameters.
        p: dropout probability in [0, 1); no dropout when 0 or when ``training`` is False.
        training: whether dropout is applied.
        eps: LayerNorm's epsilon, > 0 and finite.
        seed: the dropout mask's key (Triton backend): a Python int in [0, 2**63), or a (1,)
            int64 tensor on x's device (so that a CUDA graph can replay with a new seed); None
            draws one from torch's default generator for x's device (``torch.manual_seed``
            makes it reproducible). The same seed and shape give the same mask. The torch
            backend draws its mask with F.dropout from torch's generator and ignores ``seed``:
            the two backends agree exactly where no dropout is applied, and in distribution
            otherwise.
        backend: "auto" (torch, until the Triton kernel is measured faster on a GPU),
            "triton" (a GPU, or TRITON_INTERPRET=1; H <= 16384) or "torch".

    Returns:
        (..., H) in x's dtype, every step computed in float32 (float64 for float64 x), the
        residual sum too. Differentiable with respect to x, bias, residual, weight and ln_bias
        (each gradient in its input's dtype).
    """
    p, eps = _check(x, bias, residual, weight, ln_bias, p, training, eps, seed)
    H = x.shape[-1]
    chosen = BIAS_DROPOUT_ADD_LAYER_NORM.choose(x.device, backend, H)
    if chosen == "torch":
        return bias_dropout_add_layer_norm_torch(x, bias, residual, weight, ln_bias, p, training,
                                                 eps)
    if H > MAX_H:
        raise _checks.ArgumentValueError(f"x's last dimension H = {H} exceeds the Triton "
                                         f"kernel's {MAX_H}; use backend='torch'")
    p = p if training else 0.0
    if p == 0.0:
        seed_t = None
    elif isinstance(seed, torch.Tensor):
        seed_t = seed.reshape(1)
    elif seed is None:
        # Drawn on the device, from its generator: no host sync, and capturable in a graph.
        seed_t = torch.randint(0, 2**62, (1,), dtype=torch.int64, device=x.device)
    else:
        seed_t = torch.tensor([seed], dtype=torch.int64, device=x.device)
    out, _, _ = bias_dropout_add_layer_norm_triton(x, bias, residual, weight, ln_bias, p, eps,
                                                   seed_t)
    return out


def bias_dropout_add_layer_norm_torch(x: torch.Tensor, bias: torch.Tensor,
                                      residual: torch.Tensor, weight: torch.Tensor,
                                      ln_bias: torch.Tensor, p: float, training: bool,
                                      eps: float, seed: int | torch.Tensor | None = None
                                      ) -> torch.Tensor:
    """The pure-PyTorch implementation: mlperf_fast.workloads.bert.model's formula, its
    dropout mask drawn by F.dropout from torch's generator (``seed`` is not used),
    differentiated by autograd."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    y = F.dropout(x.to(dtype) + bias.to(dtype), p, training) + residual.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        y = F.layer_norm(y, y.shape[-1:], weight.to(dtype), ln_bias.to(dtype), eps)
    return y.to(x.dtype)


def bias_dropout_add_layer_norm_masked(x: torch.Tensor, bias: torch.Tensor,
                                       residual: torch.Tensor, weight: torch.Tensor,
                                       ln_bias: torch.Tensor, p: float, eps: float,
                                       keep: torch.Tensor) -> torch.Tensor:
    """The same formula with a given mask ``keep`` (bool, x's shape; kept elements are scaled
    by 1 / (1 - p)): what the Triton kernels compute, for tests."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    u = (x.to(dtype) + bias.to(dtype)) * keep.to(dtype) / (1.0 - p)
    y = u + residual.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        y = F.layer_norm(y, y.shape[-1:], weight.to(dtype), ln_bias.to(dtype), eps)
    return y.to(x.dtype)


def dropout_keep(seed: int | torch.Tensor, shape: Sequence[int], p: float,
                 device: torch.device | str) -> torch.Tensor:
    """The mask the Triton kernels draw for a (contiguous) input of ``shape`` with ``seed`` and
    ``p``: bool, True where an element is kept (Triton's interpreter on the CPU)."""
    from mlperf_fast.kernels.bias_dropout_add_layer_norm import dropout_keep as kernel

    if not isinstance(seed, torch.Tensor):
        seed = torch.tensor([_checks.integer(seed, "seed", lo=0, hi=_SEED_MAX)],
                            dtype=torch.int64, device=device)
    return kernel(seed.reshape(1), tuple(shape), _checks.real(p, "p", 0.0, 1.0, hi_open=True))


# The Triton path as torch.library ops (fakes in _fakes.py), the backward hand-written.

_SCHEMA = ("Tensor x, Tensor bias, Tensor residual, Tensor weight, Tensor ln_bias, float p, "
           "float eps, Tensor? seed")


def _triton_forward(x, bias, residual, weight, ln_bias, p, eps, seed):
    from mlperf_fast.kernels import bias_dropout_add_layer_norm as kernel

    return kernel.forward(x.contiguous(), bias.contiguous(), residual.contiguous(),
                          weight.contiguous(), ln_bias.contiguous(), p, seed, eps)


def _triton_backward(grad, x, bias, residual, weight, ln_bias, mean, rstd, p, seed):
    from mlperf_fast.kernels import bias_dropout_add_layer_norm as kernel

    return kernel.backward(grad.contiguous(), x.contiguous(), bias.contiguous(),
                           residual.contiguous(), weight.contiguous(), ln_bias.contiguous(),
                           mean, rstd, p, seed)


def _setup_context(ctx, inputs, output):
    x, bias, residual, weight, ln_bias, p, _eps, seed = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, bias, residual, weight, ln_bias, mean, rstd, seed)
    ctx.p = p
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, grad, grad_mean, grad_rstd):
    x, bias, residual, weight, ln_bias, mean, rstd, seed = ctx.saved_tensors
    grads = bias_dropout_add_layer_norm_triton_backward(grad, x, bias, residual, weight, ln_bias,
                                                        mean, rstd, ctx.p, seed)
    return (*grads, None, None, None)


bias_dropout_add_layer_norm_triton_backward = custom_op(
    "bias_dropout_add_layer_norm_triton_backward",
    "(Tensor grad, Tensor x, Tensor bias, Tensor residual, Tensor weight, Tensor ln_bias, "
    "Tensor mean, Tensor rstd, float p, Tensor? seed) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    _triton_backward)
bias_dropout_add_layer_norm_triton = custom_op(
    "bias_dropout_add_layer_norm_triton", f"({_SCHEMA}) -> (Tensor, Tensor, Tensor)",
    _triton_forward, backward=_backward, setup_context=_setup_context)


def _order(device_type: str, H: int) -> tuple[str, ...]:
    # auto stays on torch until benchmarks/results/ shows the Triton kernel faster on a GPU
    # (bench_bias_dropout_add_layer_norm.py has not run on one yet); backend="triton" asks for it
    return ("torch",)


BIAS_DROPOUT_ADD_LAYER_NORM = register_op(
    "bias_dropout_add_layer_norm", triton=bias_dropout_add_layer_norm_triton,
    torch_fn=bias_dropout_add_layer_norm_torch, order=_order)
