"""FusedSGD: torch.optim.SGD's semantics (momentum, dampening, nesterov, weight decay) over
multi-tensor kernels; state interchangeable with torch.optim.SGD ("momentum_buffer")."""
from __future__ import annotations

import torch

from mlperf_fast.ops.sgd import sgd_step
from mlperf_fast.optim._base import FusedOptimizer, math_dtype


class FusedSGD(FusedOptimizer):
    """d = g + weight_decay p; buf = d on the first step, else momentum buf + (1 - dampening) d;
    p -= lr (nesterov ? d + momentum buf : buf) (plain d without momentum)."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, capturable: bool = False,
                 backend: str = "auto") -> None:
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, "
                             f"{weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults, backend=backend, capturable=capturable)

    def _init_state(self, p: torch.Tensor, state: dict) -> None:
        if p.dtype != math_dtype(p.dtype):
            state["master_param"] = p.detach().to(math_dtype(p.dtype)).clone()

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
            momentum = group["momentum"]
            for b in buckets:
                args = (lr_t, lr, momentum, group["dampening"], group["weight_decay"],
                        group["nesterov"])
                if momentum == 0:
                    sgd_step(b.params, b.grads, [], b.masters, *args, False, grad_scale,
                             found_inf, backend=self.backend)
                    continue
                # Tensors seen for the first time start their buffer at the first direction.
                fresh = [i for i, s in enumerate(b.states) if "momentum_buffer" not in s]
                for i in fresh:
                    w = b.weights()[i]
                    b.states[i]["momentum_buffer"] = torch.empty_like(
                        w, memory_format=torch.contiguous_format)
                old = [i for i in range(len(b.params)) if i not in set(fresh)]
                for first_run, idx in ((True, fresh), (False, old)):
                    if not idx:
                        continue
                    sgd_step([b.params[i] for i in idx], [b.grads[i] for i in idx],
                             [b.states[i]["momentum_buffer"] for i in idx],
                             [b.masters[i] for i in idx] if b.masters else [], *args, first_run,
                             grad_scale, found_inf, backend=self.backend)
        return loss
