"""FusedSGD: torch.optim.SGD's semantics (momentum, dampening, nesterov, weight decay) over
multi-tensor kernels; state interchangeable with torch.optim.SGD ("momentum_buffer")."""
from __future__ import annotations

import torch

from mlperf_fast.ops.sgd import sgd_step
from mlperf_fast.optim._base import (LOW_PRECISION, Bucket, FusedOptimizer, StepInputs,
                                     check_number)


class FusedSGD(FusedOptimizer):
    """d = g + weight_decay p; buf = d on the first step, else momentum buf + (1 - dampening) d;
    p -= lr (nesterov ? d + momentum buf : buf) (plain d without momentum).

    float16 / bfloat16 parameters are by default updated as torch.optim.SGD updates them, to the
    bit: the parameter itself holds the weights, the momentum buffer has its dtype (the state is
    torch.optim.SGD's, with no extra entry), and each of torch.optim.SGD's operations is rounded
    into that dtype as it rounds it (these groups run the PyTorch implementation, whatever
    ``backend`` says: the kernels take float32 weights). ``master_weights=True`` keeps float32
    master weights ("master_param") and float32 buffers instead, as apex's FusedSGD with
    ``materialize_master_grads`` does, and runs the kernels: more exact than torch.optim.SGD, so
    no longer equal to it, and faster.
    """

    _lazy_state = ("momentum_buffer",)

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, capturable: bool = False,
                 backend: str = "auto", master_weights: bool = False) -> None:
        self.master_weights = bool(master_weights)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults, backend=backend, capturable=capturable)

    def _check_options(self, group: dict, where: str) -> None:
        check_number(group, "momentum", where)
        check_number(group, "weight_decay", where)
        check_number(group, "dampening", where, low=-float("inf"))
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{where}nesterov needs momentum > 0 and dampening 0, got "
                             f"momentum {group['momentum']}, dampening {group['dampening']}")

    def _update(self, inputs: StepInputs) -> None:
        created = False
        for group, lr_t, lr, buckets in inputs.groups:
            momentum = group["momentum"]
            args = (lr_t, lr, momentum, group["dampening"], group["weight_decay"],
                    group["nesterov"])
            amp = (inputs.grad_scale, inputs.found_inf)
            for b in buckets:
                if momentum == 0:
                    self._run(b, range(len(b.params)), [], args, False, amp)
                    continue
                bufs = [s.get("momentum_buffer") for s in b.states]
                fresh = [i for i, buf in enumerate(bufs) if buf is None]
                if not fresh:
                    self._run(b, range(len(b.params)), bufs, args, False, amp)
                    continue
                # Tensors seen for the first time start their buffer at the first direction.
                # Zeros, not empty: a step that GradScaler's found_inf skips inside the kernel
                # leaves the buffer as it was, and the next step reads it (momentum times zero
                # plus (1 - dampening) d: the first direction exactly when dampening is 0).
                weights = b.weights()
                for i in fresh:
                    bufs[i] = b.states[i]["momentum_buffer"] = torch.zeros_like(
                        weights[i], memory_format=torch.contiguous_format)
                created = True
                old = [i for i in range(len(bufs)) if bufs[i] is not None and i not in fresh]
                for first_run, idx in ((True, fresh), (False, old)):
                    if idx:
                        self._run(b, idx, [bufs[i] for i in idx], args, first_run, amp)
        if created and self._plan is not None and not torch.compiler.is_compiling():
            self._plan.snapshot_state()

    def _run(self, b: Bucket, idx, bufs: list[torch.Tensor], args: tuple, first_run: bool,
             amp: tuple) -> None:
        params = [b.params[i] for i in idx]
        grads = [b.grads[i] for i in idx]
        if b.masters:
            masters = [b.masters[i] for i in idx]
        elif b.dtype in LOW_PRECISION:
            # Without master weights torch.optim.SGD rounds into the parameter's dtype after
            # each of its operations; the kernels compute through float32 weights and round
            # once, which lands up to an ulp away (2e-3 for float16 weights near 2). The
            # PyTorch implementation runs torch.optim.SGD's operations one for one.
            sgd_step(params, grads, bufs, [], *args, first_run, *amp, backend="torch")
            return
        else:
            masters = []
        sgd_step(params, grads, bufs, masters, *args, first_run, *amp, backend=self.backend)
