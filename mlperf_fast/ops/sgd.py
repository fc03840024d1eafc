"""SGD (torch.optim.SGD's semantics) and LARS (the MLPerf ResNet-50 form) steps over lists of
tensors; see csrc/sgd/sgd.h. The ``*_torch`` functions are the pure-PyTorch implementations and
the reference of the kernels' tests."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mlperf_fast.ops._library import custom_op, register_op
from mlperf_fast.ops.lamb import assign, check_step_scalars, prologue, step_lr

Tensors = Sequence[torch.Tensor]


def sgd_step_torch(params, grads, momentum_buffers, master_params, lr_t, lr, momentum,
                   dampening, weight_decay, nesterov, first_run, grad_scale, found_inf) -> None:
    if not params:
        return
    ref = master_params[0] if master_params else params[0]
    skip, divisor = prologue(found_inf, grad_scale, None, 0.0, ref)
    lr = step_lr(lr_t, lr, ref)
    for i, p in enumerate(params):
        w = master_params[i] if master_params else p
        # torch.optim.SGD's operations, one for one (add with alpha rounds once), so that
        # parameters without master weights (float16 included) get its result exactly.
        d = grads[i].to(w.dtype)
        if grad_scale is not None:
            d = d / divisor.to(w.dtype)
        if weight_decay != 0:
            d = d.add(w, alpha=weight_decay)
        if momentum_buffers:
            buf = momentum_buffers[i]
            new_buf = d.clone() if first_run else buf.mul(momentum).add(d, alpha=1 - dampening)
            assign(buf, new_buf, skip)
            d = d.add(new_buf, alpha=momentum) if nesterov else new_buf
        w_new = w.add(d, alpha=-lr) if isinstance(lr, float) else w - lr * d
        assign(w, w_new, skip)
        if master_params:
            assign(p, w_new, skip)


def lars_step_torch(params, grads, momentum_buffers, master_params, param_norms, grad_norms,
                    lr_t, lr, momentum, weight_decay, trust_coefficient, eps, adapt, grad_scale,
                    found_inf) -> None:
    if not params:
        return
    ref = master_params[0] if master_params else params[0]
    skip, divisor = prologue(found_inf, grad_scale, None, 0.0, ref)
    lr = step_lr(lr_t, lr, ref)
    for i, p in enumerate(params):
        w = master_params[i] if master_params else p
        div = divisor.to(w.dtype)
        g = grads[i].to(w.dtype) / div
        pn, gn = param_norms[i].to(w.dtype), grad_norms[i].to(w.dtype) / div
        trust = torch.ones((), dtype=w.dtype, device=w.device)
        if adapt:
            trust = torch.where((pn > 0) & (gn > 0),
                                trust_coefficient * pn / (gn + weight_decay * pn + eps), trust)
        buf = momentum_buffers[i]
        new_buf = buf * momentum + (lr * trust) * (g + weight_decay * w)
        w_new = w - new_buf
        assign(buf, new_buf, skip)
        assign(w, w_new, skip)
        if master_params:
            assign(p, w_new, skip)


def sgd_step(params: Tensors, grads: Tensors, momentum_buffers: Tensors, master_params: Tensors,
             lr_t: torch.Tensor | None, lr: float, momentum: float, dampening: float,
             weight_decay: float, nesterov: bool, first_run: bool,
             grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None, *,
             backend: str = "auto") -> None:
    """One SGD step in place; ``momentum_buffers`` empty for plain SGD; ``first_run`` sets the
    buffers to the first direction (torch.optim.SGD's first step) instead of reading them."""
    if not params:
        return
    check_step_scalars(params[0], lr_t=lr_t, grad_scale=grad_scale, found_inf=found_inf)
    args = (list(params), list(grads), list(momentum_buffers), list(master_params), lr_t,
            float(lr), float(momentum), float(dampening), float(weight_decay), bool(nesterov),
            bool(first_run), grad_scale, found_inf)
    SGD_STEP(params[0].device, backend, *args)


def lars_step(params: Tensors, grads: Tensors, momentum_buffers: Tensors, master_params: Tensors,
              param_norms: torch.Tensor, grad_norms: torch.Tensor, lr_t: torch.Tensor | None,
              lr: float, momentum: float, weight_decay: float, trust_coefficient: float,
              eps: float, adapt: bool, grad_scale: torch.Tensor | None,
              found_inf: torch.Tensor | None, *, backend: str = "auto") -> None:
    """One LARS step in place. ``param_norms`` / ``grad_norms``: (n,) norms of the math weights
    and of the grads as given (before division by ``grad_scale``)."""
    if not params:
        return
    check_step_scalars(params[0], lr_t=lr_t, grad_scale=grad_scale, found_inf=found_inf)
    args = (list(params), list(grads), list(momentum_buffers), list(master_params), param_norms,
            grad_norms, lr_t, float(lr), float(momentum), float(weight_decay),
            float(trust_coefficient), float(eps), bool(adapt), grad_scale, found_inf)
    LARS_STEP(params[0].device, backend, *args)


def _triton(name):
    def run(*args):
        from mlperf_fast.kernels import sgd as kernel

        getattr(kernel, name)(*args)
    return run


_SGD_LISTS = ("Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
              "Tensor(d!)[] master_params, ")
_MUTATED = ("params", "momentum_buffers", "master_params")
sgd_step_triton = custom_op(
    "sgd_step_triton",
    f"({_SGD_LISTS}Tensor? lr_t, float lr, float momentum, float dampening, "
    "float weight_decay, bool nesterov, bool first_run, Tensor? grad_scale, "
    "Tensor? found_inf) -> ()", _triton("sgd_step"), mutates_args=_MUTATED)
lars_step_triton = custom_op(
    "lars_step_triton",
    f"({_SGD_LISTS}Tensor param_norms, Tensor grad_norms, Tensor? lr_t, float lr, "
    "float momentum, float weight_decay, float trust_coefficient, float eps, bool adapt, "
    "Tensor? grad_scale, Tensor? found_inf) -> ()", _triton("lars_step"), mutates_args=_MUTATED)
SGD_STEP = register_op("sgd_step", native="sgd_step", triton=sgd_step_triton,
                       torch_fn=sgd_step_torch)
LARS_STEP = register_op("lars_step", native="lars_step", triton=lars_step_triton,
                        torch_fn=lars_step_torch)
