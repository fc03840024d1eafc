"""FusedLAMB: LAMB as the closed-division BERT and RNN-T submissions run it (apex's FusedLAMB
arguments and semantics), over multi-tensor kernels.

A step: one multi-tensor L2 norm of all gradients (for clipping to ``max_grad_norm``), then per
parameter group and dtype one ``lamb_step`` (two passes over the tensors; see
csrc/lamb/lamb_cuda.cu). No host synchronization, so a whole train step can be captured in a
CUDA graph. Its pure-PyTorch twin is ``backend="torch"`` (mlperf_fast.ops.lamb.lamb_step_torch).
"""
from __future__ import annotations

import math
import os

import torch

from mlperf_fast.ops.lamb import lamb_step
from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm
from mlperf_fast.optim._base import FusedOptimizer, StepInputs, check_betas, check_number

# Elements per batch of the CUDA kernel's two passes; 0 runs each pass over all tensors at once.
DEFAULT_BATCH_ELEMS = int(os.environ.get("MLPERF_FAST_LAMB_BATCH", "0"))


class FusedLAMB(FusedOptimizer):
    """LAMB (You et al., 2019) with apex.optimizers.FusedLAMB's interface.

    Per parameter tensor p with gradient g (divided by GradScaler's scale, then by
    max(1, ||g_all|| / max_grad_norm) where ||g_all|| is the norm of all gradients of all groups):
        adam_w_mode False: g += weight_decay * p
        m = beta1 m + (1 - beta1 if grad_averaging else 1) g;  v = beta2 v + (1 - beta2) g^2
        update = (m / bc1) / (sqrt(v / bc2) + eps)  [+ weight_decay * p in adam_w_mode]
        ratio = ||p|| / ||update|| (1 where either is 0; 1 for groups with weight_decay 0
                unless use_nvlamb)
        p -= lr * ratio * update
    with bc = 1 - beta^step when bias_correction. ``max_grad_norm <= 0`` or None disables
    clipping. float16 / bfloat16 parameters are updated through float32 master weights kept in
    the state ("master_param"); the moments are float32 (float64 for float64 parameters).

    Params are usually two groups: weight decay 0.01 for the weights, 0 for biases and LayerNorm.
    ``backend``: "auto", "native", "triton" or "torch". ``capturable``: a float lr is moved to a
    device tensor (update it in place under a captured graph).
    """

    _zero_state = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, bias_correction: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, amsgrad: bool = False, adam_w_mode: bool = True,
                 grad_averaging: bool = True, set_grad_none: bool = True,
                 max_grad_norm: float | None = 1.0, use_nvlamb: bool = False, *,
                 capturable: bool = False, backend: str = "auto",
                 batch_elems: int | None = None) -> None:
        if amsgrad:
            raise ValueError("FusedLAMB does not support the AMSGrad variant (amsgrad=True)")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps,
                        weight_decay=weight_decay, grad_averaging=grad_averaging,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, defaults, backend=backend, capturable=capturable)
        self.adam_w_mode = adam_w_mode
        self.set_grad_none = set_grad_none
        self.use_nvlamb = use_nvlamb
        self.batch_elems = DEFAULT_BATCH_ELEMS if batch_elems is None else batch_elems

    def _check_options(self, group: dict, where: str) -> None:
        check_betas(group, where)
        check_number(group, "eps", where)
        check_number(group, "weight_decay", where)
        if group["max_grad_norm"] is not None:
            check_number(group, "max_grad_norm", where, low=-math.inf)

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=self.set_grad_none and set_to_none)

    def _update(self, inputs: StepInputs) -> None:
        # apex clips with one max_grad_norm, the first group's (the defaults').
        max_grad_norm = self.defaults["max_grad_norm"] or 0.0
        grad_norm = None
        if max_grad_norm > 0:
            grad_norm = multi_tensor_l2norm(inputs.grads, backend=self.backend)[0].reshape(1)
        for group, lr_t, lr, buckets in inputs.groups:
            beta1, beta2 = group["betas"]
            for b in buckets:
                lamb_step(b.params, b.grads, b.state_list("exp_avg"), b.state_list("exp_avg_sq"),
                          b.masters, b.steps, lr_t, lr, beta1, beta2, group["eps"],
                          group["weight_decay"], group["bias_correction"], self.adam_w_mode,
                          group["grad_averaging"], self.use_nvlamb, grad_norm, max_grad_norm,
                          inputs.grad_scale, inputs.found_inf, self.batch_elems,
                          backend=self.backend)
