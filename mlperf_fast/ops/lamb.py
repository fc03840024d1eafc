"""Adam-family optimizer steps over lists of tensors: LAMB (apex's multi_tensor_lamb semantics)
and Adam / AdamW. The optimizers of mlperf_fast.optim call these; the lists are described in
csrc/common/optim_args.h.

The pure-PyTorch implementations here (``*_torch``) are also the reference the kernels are
tested against (run in float64).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op

Tensors = Sequence[torch.Tensor]


def prologue(found_inf, grad_scale, grad_norm, max_grad_norm: float, ref: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(skip, divisor) as 0-dim tensors on ``ref``'s device, as csrc/common/optim_math.h's
    grad_prologue computes them; no value is read on the host, so the step can be traced and
    captured."""
    dt = torch.float64 if ref.dtype == torch.float64 else torch.float32
    one = torch.ones((), dtype=dt, device=ref.device)
    skip = (found_inf.reshape(()).to(dt) != 0) if found_inf is not None else one == 0
    scale = grad_scale.reshape(()).to(dt) if grad_scale is not None else one
    divisor = scale
    if grad_norm is not None and max_grad_norm > 0:
        norm = grad_norm.reshape(()).to(dt) / scale
        divisor = torch.where(norm > max_grad_norm, scale * (norm / max_grad_norm), scale)
    return skip, divisor


def step_lr(lr_t: torch.Tensor | None, lr: float, ref: torch.Tensor):
    """The learning rate: ``lr_t`` (a device tensor, so a captured step reads each step's) if
    given, else ``lr``."""
    return lr_t.reshape(()).to(torch.float64 if ref.dtype == torch.float64 else torch.float32) \
        if lr_t is not None else lr


def assign(dst: torch.Tensor, new: torch.Tensor, skip: torch.Tensor) -> None:
    """``dst = new`` unless the step is skipped."""
    dst.copy_(torch.where(skip, dst, new.to(dst.dtype)))


def _adam_direction(w, m, v, bc1, bc2, eps, weight_decay, adam_w_mode):
    u = (m / bc1) / ((v / bc2).sqrt() + eps)
    return u + weight_decay * w if adam_w_mode else u


def _adam_family_torch(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr,
                       beta1, beta2, beta3, eps, weight_decay, bias_correction, adam_w_mode,
                       grad_norm, max_grad_norm, grad_scale, found_inf, lamb, adapt):
    if not params:
        return
    ref = master_params[0] if master_params else params[0]
    skip, divisor = prologue(found_inf, grad_scale, grad_norm, max_grad_norm, ref)
    lr = step_lr(lr_t, lr, ref)
    for i, p in enumerate(params):
        w = master_params[i] if master_params else p
        m, v = exp_avgs[i], exp_avg_sqs[i]
        step = steps[i].reshape(()).to(w.dtype)
        bc1 = 1 - beta1**step if bias_correction else 1.0
        bc2 = 1 - beta2**step if bias_correction else 1.0
        g = grads[i].to(w.dtype) / divisor.to(w.dtype)
        if not adam_w_mode:
            g = g + weight_decay * w
        m_new = m * beta1 + beta3 * g
        v_new = v * beta2 + (1 - beta2) * g * g
        u = _adam_direction(w, m_new, v_new, bc1, bc2, eps, weight_decay, adam_w_mode)
        scale = lr
        if lamb and adapt:
            pn, un = w.norm(), u.norm()
            scale = torch.where((pn > 0) & (un > 0), lr * pn / un, lr)
        w_new = w - scale * u
        assign(m, m_new, skip)
        assign(v, v_new, skip)
        assign(w, w_new, skip)
        if master_params:
            assign(p, w_new, skip)


def lamb_step_torch(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr,
                    beta1, beta2, eps, weight_decay, bias_correction, adam_w_mode,
                    grad_averaging, use_nvlamb, grad_norm, max_grad_norm, grad_scale, found_inf,
                    batch_elems=0) -> None:
    _adam_family_torch(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr,
                       beta1, beta2, 1 - beta1 if grad_averaging else 1.0, eps, weight_decay,
                       bias_correction, adam_w_mode, grad_norm, max_grad_norm, grad_scale,
                       found_inf, True, use_nvlamb or weight_decay != 0)


def adam_step_torch(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr,
                    beta1, beta2, eps, weight_decay, bias_correction, adam_w_mode, grad_scale,
                    found_inf) -> None:
    _adam_family_torch(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr,
                       beta1, beta2, 1 - beta1, eps, weight_decay, bias_correction, adam_w_mode,
                       None, 0.0, grad_scale, found_inf, False, False)


def lamb_step(params: Tensors, grads: Tensors, exp_avgs: Tensors, exp_avg_sqs: Tensors,
              master_params: Tensors, steps: Tensors, lr_t: torch.Tensor | None, lr: float,
              beta1: float, beta2: float, eps: float, weight_decay: float,
              bias_correction: bool, adam_w_mode: bool, grad_averaging: bool, use_nvlamb: bool,
              grad_norm: torch.Tensor | None, max_grad_norm: float,
              grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None,
              batch_elems: int = 0, *, backend: str = "auto") -> None:
    """One LAMB step, in place, over parallel lists of one params dtype (csrc/common/optim_args.h).

    ``steps`` are already advanced. ``grad_norm`` is the global norm of all grads as given (before
    division by ``grad_scale``); clipping applies when ``max_grad_norm > 0``. ``found_inf``
    nonzero skips the step. ``batch_elems`` > 0 runs the two CUDA passes per batch of tensors of
    about that many elements, so that the second pass reads L2 (CUDA only). The lists and
    scalars are checked by the optimizer classes (mlperf_fast.optim) and again, before any
    kernel, by the native kernels.
    """
    if not params:
        return
    check_step_scalars(params[0], lr_t=lr_t, grad_norm=grad_norm, grad_scale=grad_scale,
                       found_inf=found_inf)
    args = (list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), list(master_params),
            list(steps), lr_t, float(lr), float(beta1), float(beta2), float(eps),
            float(weight_decay), bool(bias_correction), bool(adam_w_mode), bool(grad_averaging),
            bool(use_nvlamb), grad_norm, float(max_grad_norm), grad_scale, found_inf,
            int(batch_elems))
    LAMB_STEP(params[0].device, backend, *args)


def adam_step(params: Tensors, grads: Tensors, exp_avgs: Tensors, exp_avg_sqs: Tensors,
              master_params: Tensors, steps: Tensors, lr_t: torch.Tensor | None, lr: float,
              beta1: float, beta2: float, eps: float, weight_decay: float,
              bias_correction: bool, adam_w_mode: bool, grad_scale: torch.Tensor | None,
              found_inf: torch.Tensor | None, *, backend: str = "auto") -> None:
    """One Adam (adam_w_mode False: L2 decay added to the gradient) or AdamW step, in place."""
    if not params:
        return
    check_step_scalars(params[0], lr_t=lr_t, grad_scale=grad_scale, found_inf=found_inf)
    args = (list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), list(master_params),
            list(steps), lr_t, float(lr), float(beta1), float(beta2), float(eps),
            float(weight_decay), bool(bias_correction), bool(adam_w_mode), grad_scale, found_inf)
    ADAM_STEP(params[0].device, backend, *args)


def check_step_scalars(ref: torch.Tensor, **scalars: torch.Tensor | None) -> None:
    """The optional one-element tensors of a step (lr_t, grad_norm, grad_scale, found_inf) must
    be on the params' device: a meta scalar holds no value and one on another device cannot be
    read by the kernel. (Their shapes and dtypes are checked by each backend's kernel.)"""
    for name, t in scalars.items():
        if t is None:
            continue
        if isinstance(t, torch.Tensor) and t.device.type == "meta":
            raise _checks.ArgumentValueError(f"'{name}': is on the meta device, which holds no "
                                             "value")
        if isinstance(t, torch.Tensor):
            _checks.same_device(t, name, ref, "params[0]")


def _triton(name):
    def run(*args):
        from mlperf_fast.kernels import lamb as kernel

        getattr(kernel, name)(*args)
    return run


_ADAM_LISTS = ("Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
               "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] master_params, Tensor[] steps, "
               "Tensor? lr_t, float lr, float beta1, float beta2, float eps, float weight_decay, "
               "bool bias_correction, bool adam_w_mode, ")
_MUTATED = ("params", "exp_avgs", "exp_avg_sqs", "master_params")
lamb_step_triton = custom_op(
    "lamb_step_triton",
    f"({_ADAM_LISTS}bool grad_averaging, bool use_nvlamb, Tensor? grad_norm, "
    "float max_grad_norm, Tensor? grad_scale, Tensor? found_inf, int batch_elems=0) -> ()",
    _triton("lamb_step"), mutates_args=_MUTATED)
adam_step_triton = custom_op(
    "adam_step_triton", f"({_ADAM_LISTS}Tensor? grad_scale, Tensor? found_inf) -> ()",
    _triton("adam_step"), mutates_args=_MUTATED)
LAMB_STEP = register_op("lamb_step", native="lamb_step", triton=lamb_step_triton,
                        torch_fn=lamb_step_torch)
ADAM_STEP = register_op("adam_step", native="adam_step", triton=adam_step_triton,
                        torch_fn=adam_step_torch)
