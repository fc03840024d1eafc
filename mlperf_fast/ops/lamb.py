"""Adam-family optimizer steps over lists of tensors: LAMB (apex's multi_tensor_lamb semantics)
and Adam / AdamW. The optimizers of mlperf_fast.optim call these; the lists are described in
csrc/common/optim_args.h.

The pure-PyTorch implementations here (``*_torch``) are also the reference the kernels are
tested against (run in float64).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mlperf_fast.ops._library import load_extension, run_op

Tensors = Sequence[torch.Tensor]


def prologue(found_inf, grad_scale, grad_norm, max_grad_norm: float) -> tuple[bool, float]:
    """(skip, divisor) as csrc/common/optim_math.h's grad_prologue, on the host."""
    if found_inf is not None and float(found_inf) != 0.0:
        return True, 1.0
    scale = float(grad_scale) if grad_scale is not None else 1.0
    divisor = scale
    if grad_norm is not None and max_grad_norm > 0:
        norm = float(grad_norm) / scale
        if norm > max_grad_norm:
            divisor = scale * (norm / max_grad_norm)
    return False, divisor


def _adam_direction(w, m, v, bc1, bc2, eps, weight_decay, adam_w_mode):
    u = (m / bc1) / ((v / bc2).sqrt() + eps)
    return u + weight_decay * w if adam_w_mode else u


def _adam_family_torch(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t, lr,
                       beta1, beta2, beta3, eps, weight_decay, bias_correction, adam_w_mode,
                       grad_norm, max_grad_norm, grad_scale, found_inf, lamb, adapt):
    skip, divisor = prologue(found_inf, grad_scale, grad_norm, max_grad_norm)
    if skip:
        return
    lr = float(lr_t) if lr_t is not None else lr
    for i, p in enumerate(params):
        w = master_params[i] if master_params else p
        m, v = exp_avgs[i], exp_avg_sqs[i]
        step = float(steps[i])
        bc1 = 1 - beta1**step if bias_correction else 1.0
        bc2 = 1 - beta2**step if bias_correction else 1.0
        g = grads[i].to(w.dtype) / divisor
        if not adam_w_mode:
            g = g + weight_decay * w
        m.mul_(beta1).add_(g, alpha=beta3)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        u = _adam_direction(w, m, v, bc1, bc2, eps, weight_decay, adam_w_mode)
        scale = lr
        if lamb and adapt:
            pn, un = w.norm(), u.norm()
            if pn > 0 and un > 0:
                scale = lr * float(pn / un)
        w.sub_(scale * u)
        if master_params:
            p.copy_(w)


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
    about that many elements, so that the second pass reads L2 (CUDA only).
    """
    if not params:
        return
    args = (list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), list(master_params),
            list(steps), lr_t, float(lr), float(beta1), float(beta2), float(eps),
            float(weight_decay), bool(bias_correction), bool(adam_w_mode), bool(grad_averaging),
            bool(use_nvlamb), grad_norm, float(max_grad_norm), grad_scale, found_inf,
            int(batch_elems))
    run_op("lamb_step", params[0].device, backend, args, "lamb", lamb_step_torch)


def adam_step(params: Tensors, grads: Tensors, exp_avgs: Tensors, exp_avg_sqs: Tensors,
              master_params: Tensors, steps: Tensors, lr_t: torch.Tensor | None, lr: float,
              beta1: float, beta2: float, eps: float, weight_decay: float,
              bias_correction: bool, adam_w_mode: bool, grad_scale: torch.Tensor | None,
              found_inf: torch.Tensor | None, *, backend: str = "auto") -> None:
    """One Adam (adam_w_mode False: L2 decay added to the gradient) or AdamW step, in place."""
    if not params:
        return
    args = (list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), list(master_params),
            list(steps), lr_t, float(lr), float(beta1), float(beta2), float(eps),
            float(weight_decay), bool(bias_correction), bool(adam_w_mode), grad_scale, found_inf)
    run_op("adam_step", params[0].device, backend, args, "lamb", adam_step_torch)


if load_extension():

    @torch.library.register_fake("mlperf_fast::lamb_step")
    def _(*args, **kwargs):
        return None

    @torch.library.register_fake("mlperf_fast::adam_step")
    def _(*args, **kwargs):
        return None
