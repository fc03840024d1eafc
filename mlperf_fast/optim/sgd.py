"""FusedSGD: torch.optim.SGD's semantics (momentum, dampening, nesterov, weight decay) over
multi-tensor kernels; state interchangeable with torch.optim.SGD ("momentum_buffer")."""
from __future__ import annotations

from itertools import repeat
from operator import is_

import torch

from mlperf_fast.ops.sgd import sgd_step
from mlperf_fast.optim._base import FusedOptimizer, StepInputs


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

    def _update(self, inputs: StepInputs) -> None:
        for group, lr_t, lr, buckets in inputs.groups:
            momentum = group["momentum"]
            args = (lr_t, lr, momentum, group["dampening"], group["weight_decay"],
                    group["nesterov"])
            amp = (inputs.grad_scale, inputs.found_inf)
            for b in buckets:
                if momentum == 0:
                    sgd_step(b.params, b.grads, [], b.masters, *args, False, *amp,
                             backend=self.backend)
                    continue
                bufs = list(map(dict.get, b.states, repeat("momentum_buffer")))
                if not any(map(is_, bufs, repeat(None))):
                    sgd_step(b.params, b.grads, bufs, b.masters, *args, False, *amp,
                             backend=self.backend)
                    continue
                # Tensors seen for the first time start their buffer at the first direction.
                # Zeros, not empty: a step that GradScaler's found_inf skips inside the kernel
                # leaves the buffer as it was, and the next step reads it (momentum times zero
                # plus (1 - dampening) d: the first direction exactly when dampening is 0).
                weights = b.weights()
                fresh = [i for i, buf in enumerate(bufs) if buf is None]
                for i in fresh:
                    bufs[i] = b.states[i]["momentum_buffer"] = torch.zeros_like(
                        weights[i], memory_format=torch.contiguous_format)
                old = sorted(set(range(len(bufs))) - set(fresh))
                for first_run, idx in ((True, fresh), (False, old)):
                    if not idx:
                        continue
                    sgd_step([b.params[i] for i in idx], [b.grads[i] for i in idx],
                             [bufs[i] for i in idx], [b.masters[i] for i in idx] if b.masters
                             else [], *args, first_run, *amp, backend=self.backend)
