"""FusedAdam / FusedAdamW: Adam over multi-tensor kernels, one pass per parameter group and dtype
(the moment update that LAMB's first pass also runs). apex.optimizers.FusedAdam's interface;
state interchangeable with torch.optim.Adam / AdamW ("step", "exp_avg", "exp_avg_sq")."""
from __future__ import annotations

import torch

from mlperf_fast.ops.lamb import adam_step
from mlperf_fast.optim._base import FusedOptimizer, math_dtype


class FusedAdam(FusedOptimizer):
    """Adam with ``adam_w_mode=True`` (default, as apex): decoupled weight decay (AdamW,
    p -= lr * (m^ / (sqrt(v^) + eps) + weight_decay * p)); with False, L2 decay added to the
    gradient (torch.optim.Adam). float16 / bfloat16 params use float32 master weights."""

    def __init__(self, params, lr: float = 1e-3, bias_correction: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 adam_w_mode: bool = True, weight_decay: float = 0.0, amsgrad: bool = False,
                 set_grad_none: bool = True, *, capturable: bool = False,
                 backend: str = "auto") -> None:
        if amsgrad:
            raise ValueError("FusedAdam does not support the AMSGrad variant (amsgrad=True)")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults, backend=backend, capturable=capturable)
        self.adam_w_mode = adam_w_mode
        self.set_grad_none = set_grad_none

    def _init_state(self, p: torch.Tensor, state: dict) -> None:
        dt = math_dtype(p.dtype)
        state["exp_avg"] = torch.zeros_like(p, dtype=dt, memory_format=torch.contiguous_format)
        state["exp_avg_sq"] = torch.zeros_like(p, dtype=dt,
                                               memory_format=torch.contiguous_format)
        if dt != p.dtype:
            state["master_param"] = p.detach().to(dt).clone()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        per_group = [self._buckets(group) for group in self.param_groups]
        device = self._device([b for bs in per_group for b in bs])
        if device is None:
            return loss
        grad_scale, found_inf = self._amp()
        grad_scale, found_inf = self._on(grad_scale, device), self._on(found_inf, device)
        self._advance([s["step"] for bs in per_group for b in bs for s in b.states], found_inf)
        for group, buckets in zip(self.param_groups, per_group):
            lr_t, lr = self._lr(group, device)
            beta1, beta2 = group["betas"]
            for b in buckets:
                adam_step(b.params, b.grads, b.state_list("exp_avg"), b.state_list("exp_avg_sq"),
                          b.masters, b.state_list("step"), lr_t, lr, beta1, beta2, group["eps"],
                          group["weight_decay"], group["bias_correction"], self.adam_w_mode,
                          grad_scale, found_inf, backend=self.backend)
        return loss


class FusedAdamW(FusedAdam):
    """FusedAdam with decoupled weight decay, torch.optim.AdamW's defaults (weight_decay 0.01)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, **kwargs) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         adam_w_mode=True, **kwargs)
