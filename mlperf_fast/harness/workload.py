"""The contract every benchmark implements, and what the harness hands it.

A benchmark is a :class:`Workload` subclass over a configuration that extends
:class:`WorkloadConfig`. The configuration says what the run is (name, division, global batch,
seed), what it must reach (``targets``: named :class:`Metric` s, all of which must hold) and when
it is measured (``schedule``: a :class:`Schedule` in the benchmark's own unit of progress). The
harness (loop.py) owns the run: MLPerf logging, the blocks of training between evaluations,
checkpoints, the convergence decision, the report. The workload owns its data, model and
optimizer, trains from one point of progress to another, and evaluates.

Units of progress, and what MLPerf's ``epoch_num`` is in each (the rules of the round):

- ``epoch``: whole epochs (RNN-T, ResNet-50, SSD, Mask R-CNN, 3D U-Net) or fractions of one
  (DLRM evaluates every 0.05 epoch): ``epoch_num`` is the epoch count, fractional where the
  schedule is;
- ``sample``: training samples (BERT): ``epoch_num`` is the number of samples;
- ``iteration``: the benchmark's iterations (MiniGo's selfplay-and-train iterations).
"""
from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

UNITS = ("epoch", "sample", "iteration")


class DataError(Exception):
    """A data set that is missing, incomplete or corrupt. The message names the file or folder."""


class DryRunComplete(Exception):
    """Raised through the workload's training loop when a dry run has run its steps."""


@dataclass(frozen=True)
class Metric:
    """A named quality with its target. ``log_key``: the key under which MLPerf's eval_accuracy
    carries it when a benchmark has several (Mask R-CNN's "BBOX" and "SEGM")."""

    name: str
    target: float
    higher_is_better: bool = True
    log_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.target, (int, float)) or math.isnan(self.target):
            raise ValueError(f"metric {self.name}: target must be a number, got {self.target!r}")

    def met(self, value: float | None) -> bool:
        if value is None or value != value:  # NaN never converges
            return False
        return value >= self.target if self.higher_is_better else value <= self.target

    def describe(self) -> str:
        return f"{self.name} {'>=' if self.higher_is_better else '<='} {self.target:g}"


@dataclass(frozen=True)
class Schedule:
    """When the harness evaluates, in the workload's unit of progress.

    Evaluations happen at ``first``, ``first + every``, ``first + 2 * every``, ... (``first``
    defaults to ``every``) and once more at ``budget`` if the run gets there unconverged. A late
    first evaluation (3D U-Net) is a large ``first``; an offset (ResNet-50's eval_offset) is a
    ``first`` that is not a multiple of ``every``. Training between two evaluations is one MLPerf
    block.
    """

    unit: str = "epoch"
    every: float = 1.0
    budget: float = 1.0
    first: float | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"schedule unit must be one of {UNITS}, got {self.unit!r}")
        for name in ("every", "budget") + (("first",) if self.first is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ValueError(f"schedule {name} must be a finite number > 0, got {value!r}")

    def evaluation_points(self, budget: float | None = None) -> list[float]:
        """Progress at each evaluation, up to and including the budget."""
        end = self.budget if budget is None else budget
        point = self.every if self.first is None else self.first
        points = []
        while point < end - 1e-9:
            points.append(tidy(point))
            point += self.every
        points.append(tidy(end))
        return points


def tidy(x: float) -> float | int:
    """Integral floats as ints, and fractional ones cleaned of float noise (0.15000000000000002)."""
    r = round(x, 9)
    return int(r) if r == int(r) else r


@dataclass(frozen=True, kw_only=True)
class WorkloadConfig:
    """What every benchmark's configuration has. Benchmarks extend it with their own fields
    (frozen dataclasses, keyword-only), every value with its source."""

    name: str
    division: str = "open"
    targets: tuple[Metric, ...]
    schedule: Schedule
    global_batch_size: int
    seed: int = 1

    def __post_init__(self) -> None:
        if self.division not in ("closed", "open"):
            raise ValueError(f"division must be 'closed' or 'open', got {self.division!r}")
        if not self.targets:
            raise ValueError(f"configuration {self.name}: at least one target is needed")
        if self.global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {self.global_batch_size}")

    def replace(self, **changes: Any) -> WorkloadConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class RunContext:
    """What a workload gets from the harness for one run."""

    seed: int
    device: torch.device
    rank: int = 0
    world_size: int = 1
    data_dir: str | None = None
    output_dir: str | None = None
    #: The progress display; the workload calls ``report_step`` after each training step. A
    #: loss may be a tensor: it is read back only as often as the display needs it.
    progress: Any = field(default=None, repr=False)
    #: Where the workload's status lines go (the progress bar's writer): say("...").
    say: Any = field(default=None, repr=False)
    #: The per-step log (harness/steplog.py), fed by ``report_step``.
    steps: Any = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model, wrapped in DistributedDataParallel when the run has several processes."""
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def report_step(self, samples: int, loss: torch.Tensor | float | None = None,
                    at: float | None = None, **extra: float) -> None:
        """After each training step: the samples it trained (global), its loss, where the
        workload knows it the run's progress now in the schedule's unit (moves the bar), and
        any other values for the per-step log (``lr=``, ``input_wait_s=``). A dry run ends
        here, by DryRunComplete, once it has run its steps."""
        if self.progress is not None:
            self.progress.step(samples, loss, at)
        if self.steps is not None:
            self.steps.record(samples, loss, at, extra)

    def log(self, message: str) -> None:
        """A status line (rank 0 only), through the progress display's writer."""
        if self.rank != 0:
            return
        if self.say is not None:
            self.say(message)
        else:
            import sys

            print(message, file=sys.stderr, flush=True)


class Workload(abc.ABC):
    """One benchmark, in one configuration, for one run.

    The harness calls, in order: ``check_data`` (before anything is written), ``__init__``,
    ``hyperparameters`` and ``build`` (between MLPerf's init_start and init_stop), then
    ``train(start, stop)`` for each stretch between evaluation points of the schedule and
    ``evaluate()`` at each point, until every target is met or the budget is spent.
    ``state_dict``/``load_state_dict`` checkpoint it between blocks: together with the RNG states
    (saved by the harness) they must be enough to continue the run to the same result.
    """

    #: The name in the registry and in the MLPerf log's submission_benchmark.
    benchmark: ClassVar[str]
    #: The MLPerf Training round whose rules and RCPs the benchmark follows (compliance.py);
    #: a benchmark retired before it (SSD-ResNet34: 1.0.0) names its own.
    ruleset: ClassVar[str] = "2.1.0"
    #: One line for ``--list``.
    description: ClassVar[str] = ""
    #: The modules the benchmark needs beyond the base install, and the extra that installs
    #: them (``pip install mlperf-fast[<extra>]``): checked before the run starts.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None

    def __init__(self, config: WorkloadConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self._data_root: str | None = None  # data_dir(), once asked

    # -- configuration -----------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def configs(cls) -> Mapping[str, WorkloadConfig]:
        """The named configurations, e.g. {"closed": ..., "embedded": ...}."""

    @classmethod
    def default_config(cls, data_dir: str | None) -> str:
        """The configuration used when none is named: the embedded one without a data dir."""
        return "embedded" if data_dir is None else "closed"

    @classmethod
    def missing_modules(cls) -> list[str]:
        """Those of ``requires`` that cannot be imported here."""
        import importlib.util

        missing = []
        for name in cls.requires:
            try:
                found = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(name)
        return missing

    @classmethod
    def check_data(cls, config: WorkloadConfig, data_dir: str | None) -> None:
        """Raise DataError naming what is missing or malformed in ``data_dir``. Runs before the
        run writes anything. Without a data dir the workload uses its embedded data."""

    def per_process_batch(self) -> int:
        """Each process's share of the global batch (ValueError if it does not divide evenly)."""
        gbs, world = self.config.global_batch_size, self.ctx.world_size
        if gbs % world:
            raise ValueError(f"global_batch_size {gbs} is not divisible by the {world} processes")
        return gbs // world

    def compile_wanted(self, setting: str) -> bool:
        """A configuration's ``compile`` setting ("auto": on CUDA, "on", "off") for this run."""
        return setting == "on" or (setting == "auto" and self.ctx.device.type == "cuda")

    # -- data ----------------------------------------------------------------------------------
    def embedded_data(self) -> str:
        """Build (once: through data/cache.py) the embedded data set of this configuration and
        return its folder, laid out as ``--data-dir`` would be. Benchmarks with embedded data
        override this."""
        raise DataError(f"{self.benchmark}: no embedded data set; give --data-dir")

    def data_dir(self) -> str:
        """The data set's folder: ``--data-dir``, else :meth:`embedded_data` (asked once)."""
        if self._data_root is None:
            self._data_root = (self.ctx.data_dir if self.ctx.data_dir is not None
                               else self.embedded_data())
        return self._data_root

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return tuple(self.config.targets)

    @property
    def schedule(self) -> Schedule:
        return self.config.schedule

    @property
    def division(self) -> str:
        return self.config.division

    def hyperparameters(self) -> dict[str, Any]:
        """MLPerf keys logged once before run_start: global_batch_size, opt_*, train_samples,
        eval_samples, gradient_accumulation_steps, ... (whatever the benchmark's rules ask)."""
        return {}

    def rcp_as_logged(self, rcp_hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """An RCP record's "Hyperparams" as this benchmark's log states them (for the RCP
        check): the same values unless the round's RCP file keeps the reference's arguments in
        other units (SSD v1.0: the rate per 32 images, the warmup in epochs)."""
        return dict(rcp_hyperparameters)

    # -- the run ---------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> None:
        """Load the data, build the model and the optimizer."""

    @abc.abstractmethod
    def train(self, start: float, stop: float) -> float | None:
        """Train from progress ``start`` to ``stop`` (in the schedule's unit; in whole epochs,
        ``start`` and ``stop`` are consecutive integers and the harness logs the epoch), calling
        ``ctx.report_step`` after each step. Returns the progress actually reached when it is not
        ``stop`` (a sample count rounded up to whole global batches), else None."""

    @abc.abstractmethod
    def evaluate(self) -> Mapping[str, float] | float:
        """Each metric's value on the evaluation set, by metric name (the same on every rank).
        A workload with one metric may return the bare value."""

    def log_weights_initialization(self, log: Any) -> None:
        """Log the weights_initialization events that the benchmark's rules ask for."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run: model, optimizer, schedule, sampler state."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # -- derived -----------------------------------------------------------------------------
    def quality(self, result: Mapping[str, float] | float) -> dict[str, float]:
        """``evaluate``'s result as {metric name: float}, checked against ``metrics``."""
        names = [m.name for m in self.metrics]
        if not isinstance(result, Mapping):
            if len(names) != 1:
                raise TypeError(f"{self.benchmark}: evaluate() returned one value for the "
                                f"metrics {names}")
            result = {names[0]: result}
        missing = [n for n in names if n not in result]
        if missing:
            raise KeyError(f"{self.benchmark}: evaluate() gave no value for {missing}")
        return {n: float(result[n]) for n in names}

    def converged(self, quality: Mapping[str, float]) -> bool:
        """Every target met."""
        return all(m.met(quality.get(m.name)) for m in self.metrics)


class ModelOptimizerState:
    """``state_dict`` / ``load_state_dict`` for a workload whose whole state is ``self.model``,
    ``self.optimizer`` and ``self.trainer`` (its TrainStep: the applied and skipped counts, the
    loss scaler): list it before Workload among the bases. Input order is a function of the
    seed and the progress, and the RNG states are the harness's."""

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.trainer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.trainer.load_state_dict(state["step"])


def metric_values(metrics: Sequence[Metric], quality: Mapping[str, float]) -> Any:
    """What MLPerf's eval_accuracy carries: the value of a single metric, or a dict of the
    metrics' values by their log keys."""
    if len(metrics) == 1:
        return quality[metrics[0].name]
    return {(m.log_key or m.name): quality[m.name] for m in metrics}
