"""What every fused optimizer shares: collecting the parameters that have gradients into
parallel lists per (group, dtype), their checks, lazily created state (fp32 master weights for
float16 / bfloat16 parameters, step counts as float32 device tensors), the GradScaler protocol,
and state_dict loading that keeps the float32 state float32.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from mlperf_fast.ops._library import BACKENDS

LOW_PRECISION = (torch.float16, torch.bfloat16)
SUPPORTED = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# State tensors kept in the math dtype (float32 for low-precision params, else the param's).
MATH_STATE = ("exp_avg", "exp_avg_sq", "momentum_buffer", "master_param")


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in LOW_PRECISION else dtype


@dataclass
class Bucket:
    """Parallel lists of the parameters of one group and one dtype that have gradients."""

    params: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)
    masters: list[torch.Tensor] = field(default_factory=list)

    def state_list(self, key: str) -> list[torch.Tensor]:
        return [s[key] for s in self.states]

    def weights(self) -> list[torch.Tensor]:
        """The tensors the math updates: master weights, else the params."""
        return self.masters if self.masters else self.params


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the fused optimizers. Subclasses define ``_init_state(p, state)`` and ``step``."""

    # GradScaler.step sets self.grad_scale and self.found_inf and calls step() directly, which
    # unscales inside the kernels and skips the update when found_inf is nonzero.
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults: dict, backend: str = "auto",
                 capturable: bool = False) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        defaults = {**defaults, "capturable": capturable, "fused": True}
        super().__init__(params, defaults)
        self.backend = backend
        self.capturable = capturable

    # -- collecting ----------------------------------------------------------------------------

    def _buckets(self, group: dict) -> list[Bucket]:
        by_dtype: dict[torch.dtype, Bucket] = defaultdict(Bucket)
        for p in group["params"]:
            if p.grad is None:
                continue
            self._check_param(p)
            state = self.state[p]
            if len(state) == 0 or "step" not in state:
                self._new_state(p, state)
            self._fix_state(p, state)
            b = by_dtype[p.dtype]
            b.params.append(p)
            b.grads.append(p.grad)
            b.states.append(state)
            if p.dtype in LOW_PRECISION:
                b.masters.append(state["master_param"])
        return list(by_dtype.values())

    def _check_param(self, p: torch.Tensor) -> None:
        name = type(self).__name__
        if p.dtype not in SUPPORTED:
            raise TypeError(f"{name}: parameter of dtype {p.dtype} is not supported; expected "
                            "float32, float64, float16 or bfloat16")
        g = p.grad
        if g.is_sparse or g.layout != torch.strided:
            raise ValueError(f"{name} does not support sparse gradients (got a {g.layout} "
                             f"gradient for a parameter of shape {tuple(p.shape)})")
        if g.dtype != p.dtype:
            raise TypeError(f"{name}: gradient of dtype {g.dtype} for a parameter of dtype "
                            f"{p.dtype}")
        if g.device != p.device:
            raise ValueError(f"{name}: gradient on {g.device} for a parameter on {p.device}")
        if not p.is_contiguous() or not g.is_contiguous():
            raise ValueError(f"{name}: parameters and gradients must be contiguous (shape "
                             f"{tuple(p.shape)}, strides {p.stride()} / {g.stride()})")

    def _device(self, buckets: list[Bucket]) -> torch.device | None:
        device = None
        for b in buckets:
            for p in b.params:
                if device is None:
                    device = p.device
                elif p.device != device:
                    raise ValueError(f"{type(self).__name__}: parameters are on {device} and "
                                     f"{p.device}; all parameters must be on one device")
        return device

    def _new_state(self, p: torch.Tensor, state: dict) -> None:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        self._init_state(p, state)

    def _fix_state(self, p: torch.Tensor, state: dict) -> None:
        """State loaded from elsewhere (a reference optimizer, a CPU checkpoint): the step as a
        float32 tensor on the device, a master copy for low-precision params."""
        step = state["step"]
        if not torch.is_tensor(step) or step.dtype != torch.float32 or step.device != p.device:
            state["step"] = torch.as_tensor(step, dtype=torch.float32).to(p.device).reshape(())
        if p.dtype in LOW_PRECISION and "master_param" not in state:
            state["master_param"] = p.detach().to(torch.float32).clone()

    def _init_state(self, p: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    # -- per step ------------------------------------------------------------------------------

    def _amp(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        return grad_scale, found_inf

    @staticmethod
    def _on(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        if t is None:
            return None
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return t.to(device, non_blocking=True).reshape(1)

    def _lr(self, group: dict, device: torch.device) -> tuple[torch.Tensor | None, float]:
        lr = group["lr"]
        if torch.is_tensor(lr):
            if lr.numel() != 1:
                raise ValueError(f"lr must be a number or a one-element tensor, got shape "
                                 f"{tuple(lr.shape)}")
            return self._on(lr, device), 0.0
        if self.capturable and device.type == "cuda":
            # On the device, so a schedule can update it in place under a captured graph.
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)
            return group["lr"].reshape(1), 0.0
        return None, float(lr)

    @staticmethod
    def _advance(steps: list[torch.Tensor], found_inf: torch.Tensor | None) -> None:
        if not steps:
            return
        torch._foreach_add_(steps, 1.0)
        if found_inf is not None:
            # A skipped step does not count (no host sync: the flag stays on the device).
            torch._foreach_add_(steps, found_inf.reshape(()).to(steps[0].dtype), alpha=-1)

    # -- state_dict ----------------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict) -> None:
        # torch.optim casts floating state to each parameter's dtype, which would round the
        # float32 moments and master weights of bfloat16 parameters: put the originals back.
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        # Groups saved by another optimizer (torch.optim.AdamW, SGD) lack some of our options.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        params = [p for g in self.param_groups for p in g["params"]]
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        for pid, p in zip(ids, params):
            if pid not in saved:
                continue
            for key, value in saved[pid].items():
                if key in MATH_STATE and torch.is_tensor(value):
                    self.state[p][key] = value.to(device=p.device,
                                                  dtype=math_dtype(p.dtype)).clone()
            if "step" in self.state[p]:
                # A copy: the saved step may be the live counter of another optimizer.
                self.state[p]["step"] = torch.as_tensor(self.state[p]["step"]).clone()
                self._fix_state(p, self.state[p])
