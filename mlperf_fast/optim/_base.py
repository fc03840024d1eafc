"""What every fused optimizer shares: the start of a step (closure, collecting the parameters
that have gradients into parallel lists per (group, dtype), their checks, lazily created state,
the GradScaler protocol, the step counts), the state itself (fp32 master weights for float16 /
bfloat16 parameters, step counts as float32 device tensors, zero-initialized moments or momentum
buffers), and state_dict loading that keeps the float32 state float32.

Collecting and checking 400 parameters in Python costs about a millisecond, as much as the
kernels of a BERT-large step take on an H100. It is done once and kept as a plan (``StepPlan``);
each step checks, at C speed over whole lists, that nothing the plan depends on has changed, and
builds the plan again (with the full per-parameter checks and their errors) when something has.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, is_, is_not, itemgetter

import torch

from mlperf_fast.ops._library import BACKENDS

LOW_PRECISION = (torch.float16, torch.bfloat16)
SUPPORTED = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# State tensors kept in the math dtype (float32 for low-precision params, else the param's).
MATH_STATE = ("exp_avg", "exp_avg_sq", "momentum_buffer", "master_param")

_grad_of = attrgetter("grad")
_step_of = itemgetter("step")
_master_of = itemgetter("master_param")
# torch.optim's own foreach grouping: the (device, dtype) of every tensor of a list in one call.
_group_by_device_and_dtype = torch._C._group_tensors_by_device_and_dtype


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in LOW_PRECISION else dtype


@dataclass
class Bucket:
    """The parameters of one group and one dtype that have gradients, as parallel lists: the
    plan keeps params and their state dicts; each step's copy adds grads, steps and masters."""

    dtype: torch.dtype
    params: list[torch.Tensor] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)
    steps: list[torch.Tensor] = field(default_factory=list)
    masters: list[torch.Tensor] = field(default_factory=list)

    def state_list(self, key: str) -> list[torch.Tensor]:
        # Read from the state dicts at every step rather than kept: a state tensor replaced
        # between steps (a reset, a restore) is the one the kernels update.
        return list(map(itemgetter(key), self.states))

    def weights(self) -> list[torch.Tensor]:
        """The tensors the math updates: master weights, else the params."""
        return self.masters if self.masters else self.params


@dataclass
class StepInputs:
    """What a step's kernels take, once the prologue has run (``FusedOptimizer._begin_step``)."""

    device: torch.device
    grad_scale: torch.Tensor | None
    found_inf: torch.Tensor | None
    # Per param group: the group, its lr (a one-element device tensor, or None and a float) and
    # its buckets.
    groups: list[tuple[dict, torch.Tensor | None, float, list[Bucket]]]
    # Every bucket's grads and step counts, bucket by bucket.
    grads: list[torch.Tensor]
    steps: list[torch.Tensor]


class StepPlan:
    """The buckets of the last full collection, and what they were computed from.

    It holds (``holds_for``, then ``collect``) while these are what they were: the param_groups
    list, each group's params list and its contents, the optimizer's state mapping and each
    parameter's state dict in it, which parameters have a gradient, and the device, dtype,
    layout and contiguity of every gradient. A parameter's device or dtype changes in place only
    through ``.data`` (Module.to), which converts its gradient too, or autograd gives it a new
    gradient like it: either way its gradient shows the change. State tensors are read from the
    state dicts at every step, never kept; nor are gradients, which are often new tensors at
    every step (and kept, they would hold their memory past zero_grad). No group option changes
    what is collected: buckets are per (group, dtype).
    """

    def __init__(self, opt: FusedOptimizer, buckets: list[list[Bucket]],
                 device: torch.device | None) -> None:
        self.param_groups = opt.param_groups
        self.params_lists = [g["params"] for g in opt.param_groups]
        self.params_seen = [list(ps) for ps in self.params_lists]
        self.state = opt.state
        self.state_dicts = list(opt.state.values())
        self.device = device
        # Per group, its buckets and where their tensors lie in the bucket-by-bucket lists of
        # the step; where each (device, dtype) lies in them, as _group_by_device_and_dtype
        # reports it.
        self.spans: list[list[tuple[Bucket, int, int]]] = []
        self.layout: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        lo = 0
        for bs in buckets:
            self.spans.append([])
            for b in bs:
                hi = lo + len(b.params)
                self.spans[-1].append((b, lo, hi))
                self.layout[(device, b.dtype)].extend(range(lo, hi))
                lo = hi
        self.live = [p for bs in buckets for b in bs for p in b.params]
        self.live_states = [s for bs in buckets for b in bs for s in b.states]
        self.without_grad = [p for ps in self.params_seen for p in ps if p.grad is None]

    def holds_for(self, opt: FusedOptimizer) -> bool:
        groups = opt.param_groups
        if groups is not self.param_groups or len(groups) != len(self.params_lists):
            return False
        for group, params, seen in zip(groups, self.params_lists, self.params_seen):
            ps = group["params"]
            if ps is not params or len(ps) != len(seen) or not all(map(is_, ps, seen)):
                return False
        state = opt.state
        return (state is self.state and len(state) == len(self.state_dicts)
                and all(map(is_, state.values(), self.state_dicts)))

    def collect(self) -> tuple[list[list[Bucket]], list[torch.Tensor],
                                list[torch.Tensor]] | None:
        """This step's buckets per group, and the grads and step counts of all of them, bucket
        by bucket; None if the gradients no longer fit the plan."""
        if any(map(is_not, map(_grad_of, self.without_grad), repeat(None))):
            return None
        grads = list(map(_grad_of, self.live))
        if grads:
            try:
                if not all(map(torch.Tensor.is_contiguous, grads)):  # also False for COO
                    return None
            except (TypeError, RuntimeError):  # a gradient gone (None); other sparse layouts
                return None
            # With one (device, dtype), the usual case, its key says it all: no positions needed.
            several = len(self.layout) > 1
            found = _group_by_device_and_dtype([grads], several)
            if found.keys() != self.layout.keys() or several and any(
                    self.layout[k] != v[1] for k, v in found.items()):
                return None
        steps = list(map(_step_of, self.live_states))
        buckets = [[Bucket(b.dtype, b.params, b.states, grads[lo:hi], steps[lo:hi],
                           list(map(_master_of, b.states)) if b.dtype in LOW_PRECISION else [])
                    for b, lo, hi in spans] for spans in self.spans]
        return buckets, grads, steps


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the fused optimizers. Subclasses name their zero-initialized state tensors in
    ``_zero_state`` and launch their kernels in ``_update``."""

    # GradScaler.step sets self.grad_scale and self.found_inf and calls step() directly, which
    # unscales inside the kernels and skips the update when found_inf is nonzero.
    _step_supports_amp_scaling = True
    # State tensors created as zeros of the math dtype when a parameter is first stepped.
    _zero_state: tuple[str, ...] = ()
    _plan: StepPlan | None = None

    def __init__(self, params, defaults: dict, backend: str = "auto",
                 capturable: bool = False) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        defaults = {**defaults, "capturable": capturable, "fused": True}
        super().__init__(params, defaults)
        self.backend = backend
        self.capturable = capturable

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns the closure's loss (the
        closure, if given, runs first, with gradients enabled)."""
        loss, inputs = self._begin_step(closure)
        if inputs is not None:
            self._update(inputs)
        return loss

    def _update(self, inputs: StepInputs) -> None:
        raise NotImplementedError

    # -- the start of every step ---------------------------------------------------------------

    def _begin_step(self, closure=None) -> tuple[object, StepInputs | None]:
        """Runs the closure, collects the parameters that have gradients (from the plan when it
        still holds), moves GradScaler's tensors to the device and advances the step counts.
        Returns (loss, None) when no parameter has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        inputs = self._step_inputs()
        if inputs is not None:
            self._advance(inputs.steps, inputs.found_inf)
        return loss, inputs

    def _step_inputs(self) -> StepInputs | None:
        """The host side of the prologue (no kernel launch)."""
        plan = self._plan
        lists = plan.collect() if plan is not None and plan.holds_for(self) else None
        if lists is None:
            self._plan = None  # a failed check below leaves no stale plan behind
            plan = self._build_plan()
            lists = plan.collect()
            self._plan = plan
        device = plan.device
        if device is None:
            return None
        buckets, grads, steps = lists
        grad_scale, found_inf = self._amp()
        groups = [(group, *self._lr(group, device), bs)
                  for group, bs in zip(self.param_groups, buckets)]
        return StepInputs(device, self._on(grad_scale, device), self._on(found_inf, device),
                          groups, grads, steps)

    def _build_plan(self) -> StepPlan:
        buckets = [self._buckets(group) for group in self.param_groups]
        device = self._device([b for bs in buckets for b in bs])
        return StepPlan(self, buckets, device)

    def _buckets(self, group: dict) -> list[Bucket]:
        by_dtype: dict[torch.dtype, Bucket] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            self._check_param(p)
            state = self.state[p]
            if len(state) == 0 or "step" not in state:
                self._new_state(p, state)
            self._fix_state(p, state)
            b = by_dtype.get(p.dtype)
            if b is None:
                b = by_dtype[p.dtype] = Bucket(p.dtype)
            b.params.append(p)
            b.states.append(state)
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

    # -- state ---------------------------------------------------------------------------------

    def _new_state(self, p: torch.Tensor, state: dict) -> None:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for key in self._zero_state:
            state[key] = torch.zeros_like(p, dtype=math_dtype(p.dtype),
                                          memory_format=torch.contiguous_format)

    def _fix_state(self, p: torch.Tensor, state: dict) -> None:
        """The step as a float32 tensor on the device, a master copy for low-precision params
        (new, or loaded from a reference optimizer or a CPU checkpoint)."""
        step = state["step"]
        if not torch.is_tensor(step) or step.dtype != torch.float32 or step.device != p.device:
            state["step"] = torch.as_tensor(step, dtype=torch.float32).to(p.device).reshape(())
        if p.dtype in LOW_PRECISION and "master_param" not in state:
            state["master_param"] = p.detach().to(torch.float32).clone()

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
        self._plan = None
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
