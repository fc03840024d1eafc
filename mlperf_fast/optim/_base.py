"""What every fused optimizer shares: the start of a step (closure, collecting the parameters
that have gradients into parallel lists per (group, dtype), their checks, lazily created state,
the GradScaler protocol, the step counts), the state itself (fp32 master weights for float16 /
bfloat16 parameters, step counts as float32 device tensors, zero-initialized moments or momentum
buffers), and state_dict loading that keeps the float32 state float32.

Collecting and checking 400 parameters in Python costs about a millisecond, as much as the
kernels of a BERT-large step take on an H100. It is done once and kept as a plan (``StepPlan``);
each step checks, at C speed over whole lists, that nothing the plan depends on has changed, and
builds the plan again (with the full per-parameter checks and their errors) when something has.

Nothing changes before everything is checked: the options of every group, every parameter, its
gradient and its state, GradScaler's tensors; then the step counts advance and the kernels run.
Under torch.compile the plan is not used: the checks and the collection are traced with the step
(Dynamo turns them into guards), so a compiled step holds no host-side state of its own.
"""
from __future__ import annotations

import math
import warnings
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
        return [s[key] for s in self.states]

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
    state dicts at every step; the plan also holds the ones its checks saw, so that a state
    tensor replaced between steps (by hand, with another shape) is seen and checked before any
    kernel runs (held, not their ids: a freed tensor's id can come back). Gradients are not
    kept: they are often new tensors at every step, and kept, they would hold their memory past
    zero_grad. No group option changes what is collected: buckets are per (group, dtype); the
    options themselves are checked at every step (a few comparisons per group).
    """

    def __init__(self, opt: FusedOptimizer, buckets: list[list[Bucket]],
                 device: torch.device | None) -> None:
        self.param_groups = opt.param_groups
        self.params_lists = [g["params"] for g in opt.param_groups]
        self.params_seen = [list(ps) for ps in self.params_lists]
        self.state = opt.state
        self.state_dicts = list(opt.state.values())
        self.device = device
        self.master_weights = opt.master_weights
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
        self.state_keys = (*opt._zero_state, *opt._lazy_state, "master_param")
        self.snapshot_state()

    def snapshot_state(self) -> None:
        """Remembers the state tensors the checks saw; the optimizer calls it again after it
        creates state itself inside a step."""
        self.state_seen = [list(map(dict.get, self.live_states, repeat(k)))
                           for k in self.state_keys]

    def _state_unchanged(self) -> bool:
        # A state tensor replaced between steps (a reset, a restore by hand) is checked again
        # before it reaches a kernel: a wrong shape must fail before any group is updated.
        states = self.live_states
        return all(all(map(is_, map(dict.get, states, repeat(k)), seen))
                   for k, seen in zip(self.state_keys, self.state_seen))

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
        if not self._state_unchanged():
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
                           list(map(_master_of, b.states)) if self.masters(b.dtype) else [])
                    for b, lo, hi in spans] for spans in self.spans]
        return buckets, grads, steps

    def masters(self, dtype: torch.dtype) -> bool:
        return dtype in LOW_PRECISION and self.master_weights


def _lists(buckets: list[list[Bucket]], master_weights: bool
           ) -> tuple[list[list[Bucket]], list[torch.Tensor], list[torch.Tensor]]:
    """``StepPlan.collect``'s result from freshly collected buckets, in plain loops that
    torch.compile traces."""
    grads: list[torch.Tensor] = []
    steps: list[torch.Tensor] = []
    out = []
    for bs in buckets:
        row = []
        for b in bs:
            g = [p.grad for p in b.params]
            st = [s["step"] for s in b.states]
            masters = ([s["master_param"] for s in b.states]
                       if master_weights and b.dtype in LOW_PRECISION else [])
            row.append(Bucket(b.dtype, b.params, b.states, g, st, masters))
            grads += g
            steps += st
        out.append(row)
    return out, grads, steps


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(group: dict, key: str, where: str, low: float = 0.0, *,
                 low_open: bool = False, high: float | None = None,
                 high_open: bool = True) -> None:
    """``group[key]`` must be a finite number in [low, high) (open or closed at either end as
    asked): torch.optim's range checks, NaN and infinities refused as well."""
    value = group[key]
    if not _is_number(value):
        raise TypeError(f"{where}{key} must be a number, got {type(value).__name__}")
    # Comparisons, not math.isfinite: under torch.compile a float option may be symbolic, and
    # a comparison of it becomes a guard.
    ok = -math.inf < value < math.inf and (value > low if low_open else value >= low)
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = f"{'(' if low_open else '['}{low}"
        hi = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        raise ValueError(f"{where}{key} must be a finite number in {lo}, {hi}, got {value}")


def check_betas(group: dict, where: str) -> None:
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(map(_is_number, betas)):
        raise TypeError(f"{where}betas must be a pair of numbers, got {betas!r}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:  # also False for NaN
            raise ValueError(f"{where}betas[{i}] must be in [0, 1), got {beta}")


def _check_scalar_tensor(t: object, name: str) -> None:
    """GradScaler's scale and found_inf, a device lr: one floating-point element with a value."""
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.numel() != 1:
        raise ValueError(f"{name} must have one element, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.device.type == "meta":
        raise ValueError(f"{name} is on the meta device: it has no value to read")


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the fused optimizers. Subclasses name their zero-initialized state tensors in
    ``_zero_state``, check their options in ``_check_options`` and launch their kernels in
    ``_update``."""

    # GradScaler.step sets self.grad_scale and self.found_inf and calls step() directly, which
    # unscales inside the kernels and skips the update when found_inf is nonzero.
    _step_supports_amp_scaling = True
    # State tensors created as zeros of the math dtype when a parameter is first stepped.
    _zero_state: tuple[str, ...] = ()
    # State tensors that _update creates itself when they are missing.
    _lazy_state: tuple[str, ...] = ()
    _plan: StepPlan | None = None
    # float16 / bfloat16 parameters are updated through float32 master weights kept in the state.
    master_weights = True

    def __init__(self, params, defaults: dict, backend: str = "auto",
                 capturable: bool = False) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._check_group(defaults, "")
        defaults = {**defaults, "capturable": capturable, "fused": True}
        super().__init__(params, defaults)
        self.backend = backend
        self.capturable = capturable

    def add_param_group(self, param_group: dict) -> None:
        """torch.optim's, and then what it leaves unchecked: a parameter twice in the group
        (torch only warns; the update would apply twice) and the group's options."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*duplicate parameters.*")
            super().add_param_group(param_group)
        group = self.param_groups[-1]
        where = f"param group {len(self.param_groups) - 1}: "
        try:
            self._check_unique([group])
            self._check_group(group, where)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

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

    # -- checks --------------------------------------------------------------------------------

    def _check_options(self, group: dict, where: str) -> None:
        """The subclass's option checks (lr is checked here), raising ValueError / TypeError
        that start with ``where`` and name the option."""

    def _check_group(self, group: dict, where: str, values: bool = True) -> None:
        lr = group["lr"]
        if torch.is_tensor(lr):
            _check_scalar_tensor(lr, f"{where}lr")
            # Read once when the group is added (as torch.optim does), never per step: a
            # device lr is there to avoid host synchronization.
            if values and not torch.compiler.is_compiling() and not 0.0 <= float(lr) < math.inf:
                raise ValueError(f"{where}lr must be a finite number >= 0, got {float(lr)}")
        else:
            check_number(group, "lr", where)
        self._check_options(group, where)

    def _check_groups(self) -> None:
        for i, group in enumerate(self.param_groups):
            self._check_group(group, f"param group {i}: ", values=False)

    def _check_unique(self, groups: list[dict]) -> None:
        """torch.optim refuses a parameter in two groups when it is added; params lists changed
        in place afterwards reach here first."""
        seen: dict[int, int] = {}
        for gi, group in enumerate(groups):
            for p in group["params"]:
                if id(p) in seen:
                    other = seen[id(p)]
                    place = (f"twice in param group {gi}" if other == gi else
                             f"in param groups {other} and {gi}")
                    raise ValueError(f"{type(self).__name__}: a parameter of shape "
                                     f"{tuple(p.shape)} appears {place}; each parameter must "
                                     "appear once")
                seen[id(p)] = gi

    # -- the start of every step ---------------------------------------------------------------

    def _begin_step(self, closure=None) -> tuple[object, StepInputs | None]:
        """Runs the closure, checks and collects the parameters that have gradients (from the
        plan when it still holds), moves GradScaler's tensors to the device and advances the
        step counts. Returns (loss, None) when no parameter has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        inputs = self._step_inputs()
        if inputs is not None:
            self._advance(inputs.steps, inputs.found_inf)
        return loss, inputs

    def _step_inputs(self) -> StepInputs | None:
        """The host side of the prologue (no kernel launch): every check of the step."""
        self._check_groups()
        grad_scale, found_inf = self._amp()
        if torch.compiler.is_compiling():
            buckets, device = self._checked_buckets()
            lists = _lists(buckets, self.master_weights)
        else:
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
        groups = [(group, *self._lr(group, device), bs)
                  for group, bs in zip(self.param_groups, buckets)]
        return StepInputs(device, self._on(grad_scale, device), self._on(found_inf, device),
                          groups, grads, steps)

    def _build_plan(self) -> StepPlan:
        buckets, device = self._checked_buckets()
        return StepPlan(self, buckets, device)

    def _checked_buckets(self) -> tuple[list[list[Bucket]], torch.device | None]:
        # Everything is checked before any state is created.
        self._check_unique(self.param_groups)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._check_param(p)
                    state = self.state.get(p)
                    if state and "step" in state:
                        self._check_state(p, state)
        buckets = [self._buckets(group) for group in self.param_groups]
        return buckets, self._device([b for bs in buckets for b in bs])

    def _buckets(self, group: dict) -> list[Bucket]:
        by_dtype: dict[torch.dtype, Bucket] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
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
        if p.device.type == "meta":
            raise ValueError(f"{name}: a parameter of shape {tuple(p.shape)} is on the meta "
                             "device: it has no values to update")
        g = p.grad
        if g.is_sparse or g.layout != torch.strided:
            raise ValueError(f"{name} does not support sparse gradients (got a {g.layout} "
                             f"gradient for a parameter of shape {tuple(p.shape)})")
        if g.dtype != p.dtype:
            raise TypeError(f"{name}: gradient of dtype {g.dtype} for a parameter of dtype "
                            f"{p.dtype}")
        if g.device != p.device:
            raise ValueError(f"{name}: gradient on {g.device} for a parameter on {p.device}")
        if g.shape != p.shape:
            raise ValueError(f"{name}: gradient of shape {tuple(g.shape)} for a parameter of "
                             f"shape {tuple(p.shape)}")
        if not p.is_contiguous() or not g.is_contiguous():
            raise ValueError(f"{name}: parameters and gradients must be contiguous (shape "
                             f"{tuple(p.shape)}, strides {p.stride()} / {g.stride()})")

    def _check_state(self, p: torch.Tensor, state: dict) -> None:
        """The state tensors of ``p`` the kernels read: its shape, the state dtype, its device."""
        name = type(self).__name__
        for key in (*self._zero_state, *self._lazy_state, "master_param"):
            t = state.get(key)
            if t is None:
                if key in self._zero_state:
                    raise ValueError(f"{name}: the state of a parameter of shape "
                                     f"{tuple(p.shape)} has a step but no {key!r}")
                continue
            if not torch.is_tensor(t):
                raise TypeError(f"{name}: state {key!r} must be a tensor, got "
                                f"{type(t).__name__}")
            if t.shape != p.shape:
                raise ValueError(f"{name}: state {key!r} of shape {tuple(t.shape)} for a "
                                 f"parameter of shape {tuple(p.shape)}")
            if not t.is_floating_point():
                raise TypeError(f"{name}: state {key!r} of dtype {t.dtype} for a parameter of "
                                f"dtype {p.dtype}; expected floating point")
            if t.device != p.device:
                raise ValueError(f"{name}: state {key!r} on {t.device} for a parameter on "
                                 f"{p.device}")
            if not t.is_contiguous():
                raise ValueError(f"{name}: state {key!r} must be contiguous")

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

    def _state_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype of the moments and buffers: float32 for low-precision parameters kept
        through master weights, else the parameter's own (as torch.optim keeps them)."""
        return math_dtype(dtype) if self.master_weights else dtype

    def _new_state(self, p: torch.Tensor, state: dict) -> None:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for key in self._zero_state:
            state[key] = torch.zeros_like(p, dtype=self._state_dtype(p.dtype),
                                          memory_format=torch.contiguous_format)

    def _fix_state(self, p: torch.Tensor, state: dict) -> None:
        """The step as a float32 tensor on the device, a master copy for low-precision params
        (new, or loaded from a reference optimizer or a CPU checkpoint)."""
        step = state["step"]
        if not torch.is_tensor(step) or step.dtype != torch.float32 or step.device != p.device:
            state["step"] = torch.as_tensor(step, dtype=torch.float32).to(p.device).reshape(())
        if p.dtype in LOW_PRECISION and self.master_weights and "master_param" not in state:
            state["master_param"] = p.detach().to(torch.float32).clone()
        # A parameter converted in place (Module.to) after its state was made: its state
        # follows, as torch.optim's arithmetic would promote it.
        for key in (*self._zero_state, *self._lazy_state, "master_param"):
            t = state.get(key)
            want = torch.float32 if key == "master_param" else self._state_dtype(p.dtype)
            if t is not None and t.dtype != want:
                state[key] = t.to(want)

    # -- per step ------------------------------------------------------------------------------

    def _amp(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        for t, name in ((grad_scale, "grad_scale"), (found_inf, "found_inf")):
            if t is not None:
                _check_scalar_tensor(t, name)
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

    def _check_loaded(self, state_dict: dict) -> None:
        """The saved state against this optimizer's parameters, before anything is loaded:
        torch.optim checks the groups' sizes but loads state of any shape."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             "'param_groups' (an optimizer's state_dict())")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state has {len(saved_groups)} param "
                             f"groups, this optimizer {len(self.param_groups)}")
        ids, params = [], []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: param group {gi} has "
                                 f"{len(saved['params'])} parameters in the state, "
                                 f"{len(group['params'])} here")
            ids += saved["params"]
            params += group["params"]
            self._check_group({**self.defaults, **saved, "params": group["params"]},
                              f"{name}.load_state_dict: param group {gi}: ")
        by_id = dict(zip(ids, params))
        for pid, entry in state_dict["state"].items():
            if pid not in by_id:
                raise ValueError(f"{name}.load_state_dict: state for parameter {pid!r}, which "
                                 "no param group lists")
            if not isinstance(entry, dict):
                raise TypeError(f"{name}.load_state_dict: the state of parameter {pid!r} must "
                                f"be a dict, got {type(entry).__name__}")
            p = by_id[pid]
            for key, value in entry.items():
                if key == "step":
                    if not (_is_number(value) or torch.is_tensor(value) and value.numel() == 1):
                        raise TypeError(f"{name}.load_state_dict: parameter {pid!r}: 'step' "
                                        f"must be a number or a one-element tensor")
                    continue
                if not torch.is_tensor(value) or key not in MATH_STATE:
                    continue
                if value.shape != p.shape:
                    raise ValueError(f"{name}.load_state_dict: parameter {pid!r}: state "
                                     f"{key!r} of shape {tuple(value.shape)} for a parameter "
                                     f"of shape {tuple(p.shape)}")
                if not value.is_floating_point():
                    raise TypeError(f"{name}.load_state_dict: parameter {pid!r}: state {key!r} "
                                    f"of dtype {value.dtype}; expected floating point")
            if "step" in entry:
                missing = [k for k in self._zero_state if k not in entry]
                if missing:
                    raise ValueError(f"{name}.load_state_dict: parameter {pid!r}: the state "
                                     f"has a step but no {missing}")

    def load_state_dict(self, state_dict: dict) -> None:
        self._check_loaded(state_dict)
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
                    dtype = torch.float32 if key == "master_param" else self._state_dtype(p.dtype)
                    self.state[p][key] = value.to(device=p.device, dtype=dtype).clone()
            if not (p.dtype in LOW_PRECISION and self.master_weights):
                # The parameter itself holds the weights: a saved master copy is not read.
                self.state[p].pop("master_param", None)
            if "step" in self.state[p]:
                # A copy: the saved step may be the live counter of another optimizer.
                self.state[p]["step"] = torch.as_tensor(self.state[p]["step"]).clone()
                self._fix_state(p, self.state[p])
