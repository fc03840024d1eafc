"""The training step every benchmark uses: one optimizer step over the micro-batches of one
global batch.

- Gradient accumulation: the loss of each of ``count`` micro-batches is divided by ``count`` and
  back-propagated; under DistributedDataParallel all but the last run under ``no_sync`` so that
  gradients are all-reduced once per step.
- Mixed precision: the forward under ``torch.autocast`` in ``amp_dtype`` (bf16 or fp16), and for
  fp16 a ``torch.amp.GradScaler`` (loss scaling, skipped steps on overflow, as torch does).
- Gradient clipping by global norm (``clip_grad_norm``), when the optimizer does not clip itself
  (LAMB clips inside its own step).
- Non-finite losses: every micro-batch is back-propagated whatever its loss, so that every rank
  takes part in every all-reduce (a rank that skipped its backward alone would leave the others
  waiting forever). Whether the step is applied is decided once per step, from one flag: "a loss
  or the clipped gradient norm was not finite" on any rank, reduced with MAX over the ranks, and
  read by the host once per step (never per micro-batch). A step that is not applied changes
  nothing: no optimizer step, no EMA update, no step count; ``skipped`` counts it and the
  ``on_skip`` callback is told.
- EMA: ``ema.update()`` after every applied step.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mlperf_fast.harness import distributed
from mlperf_fast.harness.profiling import phase


@dataclass
class StepResult:
    #: the global batch's mean loss on this rank (a device scalar, not read back)
    loss: torch.Tensor
    #: whether the optimizer step was applied (False: a non-finite loss or gradient somewhere)
    applied: bool


class TrainStep:
    """``step(micro_batches, count)`` runs one optimizer step.

    ``loss_module``: a module (possibly wrapped in DistributedDataParallel) whose forward takes
    one micro-batch's arguments (a tuple, or a dict of keyword arguments) and returns the mean
    loss of that micro-batch, a scalar tensor. ``optimizer``: any torch.optim.Optimizer.
    ``params``: the parameters to clip (default: the loss module's).
    """

    def __init__(self, loss_module: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 amp_dtype: torch.dtype | None = None,
                 grad_scaler: torch.amp.GradScaler | None = None,
                 clip_grad_norm: float | None = None,
                 params: Sequence[torch.nn.Parameter] | None = None,
                 ema: Any = None,
                 skip_nonfinite: bool = True,
                 on_skip: Callable[[int], None] | None = None) -> None:
        if amp_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"amp_dtype must be None, torch.bfloat16 or torch.float16, "
                             f"got {amp_dtype}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm}")
        self.loss_module = loss_module
        self.optimizer = optimizer
        self.amp_dtype = amp_dtype
        self.grad_scaler = grad_scaler
        self.clip_grad_norm = clip_grad_norm
        self.params = list(params) if params is not None else [
            p for p in loss_module.parameters() if p.requires_grad]
        self.ema = ema
        self.skip_nonfinite = skip_nonfinite
        self.on_skip = on_skip
        #: optimizer steps applied and skipped so far (saved in checkpoints by the workload)
        self.applied = 0
        self.skipped = 0

    def _device(self) -> torch.device:
        return self.params[0].device if self.params else torch.device("cpu")

    def _autocast(self, device: torch.device):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    def step(self, micro_batches: Iterable[Any], count: int) -> StepResult:
        """Forward and backward over ``count`` micro-batches (taken from the iterable as needed,
        so that input can still be arriving), then the optimizer step unless a value was not
        finite."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        device = self._device()
        ddp = isinstance(self.loss_module, torch.nn.parallel.DistributedDataParallel)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        bad = torch.zeros((), device=device, dtype=torch.bool)
        it = iter(micro_batches)
        for j in range(count):
            try:
                batch = next(it)
            except StopIteration:
                raise ValueError(f"{j} micro-batches given, {count} expected") from None
            sync = not ddp or j == count - 1
            with (contextlib.nullcontext() if sync else self.loss_module.no_sync()):
                with phase("forward"), self._autocast(device):
                    loss = (self.loss_module(**batch) if isinstance(batch, dict)
                            else self.loss_module(*batch))
                loss = loss.float() / count
                if self.skip_nonfinite:
                    bad |= ~torch.isfinite(loss.detach())
                with phase("backward"):
                    if self.grad_scaler is not None:
                        self.grad_scaler.scale(loss).backward()
                    else:
                        loss.backward()
            total += loss.detach()
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
        if self.clip_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm, foreach=True)
            if self.skip_nonfinite:
                bad |= ~torch.isfinite(norm)
        applied = True
        if self.skip_nonfinite:
            flag = distributed.all_reduce_max(bad.to(torch.int32))
            applied = not bool(flag.item())  # the step's one read of a device value
        if applied:
            with phase("optimizer"):
                if self.grad_scaler is not None:
                    self.grad_scaler.step(self.optimizer)
                    self.grad_scaler.update()
                else:
                    self.optimizer.step()
                if self.ema is not None:
                    self.ema.update()
            self.applied += 1
        else:
            if self.grad_scaler is not None:
                self.grad_scaler.update()  # unscale_ saw the non-finite gradients: backs off
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            if self.on_skip is not None:
                self.on_skip(self.applied + self.skipped)
        return StepResult(total, applied)

    def state_dict(self) -> dict[str, Any]:
        state = {"applied": self.applied, "skipped": self.skipped}
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.applied, self.skipped = int(state["applied"]), int(state["skipped"])
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
