"""SGD (torch.optim.SGD's semantics) and LARS (the MLPerf ResNet-50 form) steps over lists of
tensors; see csrc/sgd/sgd.h. The ``*_torch`` functions are the pure-PyTorch implementations and
the reference of the kernels' tests."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mlperf_fast.ops._library import load_extension, run_op
from mlperf_fast.ops.lamb import prologue

Tensors = Sequence[torch.Tensor]


def sgd_step_torch(params, grads, momentum_buffers, master_params, lr_t, lr, momentum,
                   dampening, weight_decay, nesterov, first_run, grad_scale, found_inf) -> None:
    skip, divisor = prologue(found_inf, grad_scale, None, 0.0)
    if skip:
        return
    lr = float(lr_t) if lr_t is not None else lr
    for i, p in enumerate(params):
        w = master_params[i] if master_params else p
        d = grads[i].to(w.dtype) / divisor + weight_decay * w
        if momentum_buffers:
            buf = momentum_buffers[i]
            if first_run:
                buf.copy_(d)
            else:
                buf.mul_(momentum).add_(d, alpha=1 - dampening)
            d = d + momentum * buf if nesterov else buf
        w.sub_(lr * d)
        if master_params:
            p.copy_(w)


def lars_step_torch(params, grads, momentum_buffers, master_params, param_norms, grad_norms,
                    lr_t, lr, momentum, weight_decay, trust_coefficient, eps, adapt, grad_scale,
                    found_inf) -> None:
    skip, divisor = prologue(found_inf, grad_scale, None, 0.0)
    if skip:
        return
    lr = float(lr_t) if lr_t is not None else lr
    for i, p in enumerate(params):
        w = master_params[i] if master_params else p
        g = grads[i].to(w.dtype) / divisor
        pn, gn = float(param_norms[i]), float(grad_norms[i]) / divisor
        trust = 1.0
        if adapt and pn > 0 and gn > 0:
            trust = trust_coefficient * pn / (gn + weight_decay * pn + eps)
        buf = momentum_buffers[i]
        buf.mul_(momentum).add_(g + weight_decay * w, alpha=lr * trust)
        w.sub_(buf)
        if master_params:
            p.copy_(w)


def sgd_step(params: Tensors, grads: Tensors, momentum_buffers: Tensors, master_params: Tensors,
             lr_t: torch.Tensor | None, lr: float, momentum: float, dampening: float,
             weight_decay: float, nesterov: bool, first_run: bool,
             grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None, *,
             backend: str = "auto") -> None:
    """One SGD step in place; ``momentum_buffers`` empty for plain SGD; ``first_run`` sets the
    buffers to the first direction (torch.optim.SGD's first step) instead of reading them."""
    if not params:
        return
    args = (list(params), list(grads), list(momentum_buffers), list(master_params), lr_t,
            float(lr), float(momentum), float(dampening), float(weight_decay), bool(nesterov),
            bool(first_run), grad_scale, found_inf)
    run_op("sgd_step", params[0].device, backend, args, "sgd", sgd_step_torch)


def lars_step(params: Tensors, grads: Tensors, momentum_buffers: Tensors, master_params: Tensors,
              param_norms: torch.Tensor, grad_norms: torch.Tensor, lr_t: torch.Tensor | None,
              lr: float, momentum: float, weight_decay: float, trust_coefficient: float,
              eps: float, adapt: bool, grad_scale: torch.Tensor | None,
              found_inf: torch.Tensor | None, *, backend: str = "auto") -> None:
    """One LARS step in place. ``param_norms`` / ``grad_norms``: (n,) norms of the math weights
    and of the grads as given (before division by ``grad_scale``)."""
    if not params:
        return
    args = (list(params), list(grads), list(momentum_buffers), list(master_params), param_norms,
            grad_norms, lr_t, float(lr), float(momentum), float(weight_decay),
            float(trust_coefficient), float(eps), bool(adapt), grad_scale, found_inf)
    run_op("lars_step", params[0].device, backend, args, "sgd", lars_step_torch)


if load_extension():

    @torch.library.register_fake("mlperf_fast::sgd_step")
    def _(*args, **kwargs):
        return None

    @torch.library.register_fake("mlperf_fast::lars_step")
    def _(*args, **kwargs):
        return None
