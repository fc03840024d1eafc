"""FusedAdam / FusedAdamW: Adam over multi-tensor kernels, one pass per parameter group and dtype
(the moment update that LAMB's first pass also runs). apex.optimizers.FusedAdam's interface;
state interchangeable with torch.optim.Adam / AdamW ("step", "exp_avg", "exp_avg_sq")."""
from __future__ import annotations

from mlperf_fast.ops.lamb import adam_step
from mlperf_fast.optim._base import FusedOptimizer, StepInputs, check_betas, check_number


class FusedAdam(FusedOptimizer):
    """Adam with ``adam_w_mode=True`` (default, as apex): decoupled weight decay (AdamW,
    p -= lr * (m^ / (sqrt(v^) + eps) + weight_decay * p)); with False, L2 decay added to the
    gradient (torch.optim.Adam). float16 / bfloat16 params use float32 master weights
    (``master_weights=True``, accepted for apex's signature; False is refused)."""

    _zero_state = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, bias_correction: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 adam_w_mode: bool = True, weight_decay: float = 0.0, amsgrad: bool = False,
                 set_grad_none: bool = True, *, capturable: bool = False,
                 master_weights: bool = True, backend: str = "auto") -> None:
        if amsgrad:
            raise ValueError("FusedAdam does not support the AMSGrad variant (amsgrad=True)")
        if not master_weights:
            # apex's master_weights=False updates half parameters in place; the kernels here
            # take float32 weights, so low-precision parameters always get a master copy.
            raise ValueError("FusedAdam keeps float32 master weights for float16 / bfloat16 "
                             "parameters; master_weights=False is not supported")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults, backend=backend, capturable=capturable)
        self.adam_w_mode = adam_w_mode
        self.set_grad_none = set_grad_none

    def _check_options(self, group: dict, where: str) -> None:
        check_betas(group, where)
        check_number(group, "eps", where)
        check_number(group, "weight_decay", where)

    def _update(self, inputs: StepInputs) -> None:
        for group, lr_t, lr, buckets in inputs.groups:
            beta1, beta2 = group["betas"]
            for b in buckets:
                adam_step(b.params, b.grads, b.state_list("exp_avg"), b.state_list("exp_avg_sq"),
                          b.masters, b.steps, lr_t, lr, beta1, beta2, group["eps"],
                          group["weight_decay"], group["bias_correction"], self.adam_w_mode,
                          inputs.grad_scale, inputs.found_inf, backend=self.backend)


class FusedAdamW(FusedAdam):
    """FusedAdam with decoupled weight decay, torch.optim.AdamW's defaults (weight_decay 0.01)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, **kwargs) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         adam_w_mode=True, **kwargs)
