"""The interface each benchmark implements, and what the harness hands it."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


class DataError(Exception):
    """A data set that is missing, incomplete or corrupt. The message names the file or folder."""


@dataclass
class RunContext:
    """What a workload gets from the harness for one run."""

    seed: int
    device: torch.device
    rank: int = 0
    world_size: int = 1
    data_dir: str | None = None
    output_dir: str | None = None
    #: Called by the workload after each training step: progress(samples, loss). ``loss`` may
    #: be a tensor; it is read back only as often as the progress display needs it.
    progress: Any = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model, wrapped in DistributedDataParallel when the run has several processes."""
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def report_step(self, samples: int, loss: torch.Tensor | float | None = None) -> None:
        if self.progress is not None:
            self.progress.step(samples, loss)


class Workload(abc.ABC):
    """One benchmark, in one configuration, for one run.

    The harness calls, in order: ``check_data`` (before anything is written), ``__init__``,
    ``build`` (between MLPerf's init_start and init_stop), then for each epoch ``train_epoch`` and,
    every ``epochs_per_block`` epochs, ``evaluate``, until the quality reaches ``target`` or
    ``max_epochs`` have run. ``state_dict``/``load_state_dict`` checkpoint it between blocks:
    together with the RNG states (saved by the harness) they must be enough to continue the run
    to the same result.
    """

    #: The name in the registry and in the MLPerf log's submission_benchmark.
    benchmark: ClassVar[str]
    #: How quality is named in reports ("accuracy", "WER", ...).
    quality_name: ClassVar[str] = "accuracy"
    #: True if larger quality is better (accuracy, mAP); False for error rates (WER).
    higher_is_better: ClassVar[bool] = True

    def __init__(self, config: Any, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx

    # -- configuration -----------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def configs(cls) -> dict[str, Any]:
        """The named configurations, e.g. {"closed": ..., "embedded": ...}."""

    @classmethod
    def default_config(cls, data_dir: str | None) -> str:
        """The configuration used when none is named: the embedded one without a data dir."""
        return "embedded" if data_dir is None else "closed"

    @classmethod
    def check_data(cls, config: Any, data_dir: str | None) -> None:
        """Raise DataError naming what is missing or malformed in ``data_dir``. Runs before the
        run writes anything. Without a data dir the workload uses its embedded data."""

    @property
    @abc.abstractmethod
    def target(self) -> float:
        """The quality at which the run has converged."""

    @property
    @abc.abstractmethod
    def max_epochs(self) -> int:
        """The epoch budget: the run stops unconverged after this many epochs."""

    @property
    def epochs_per_block(self) -> int:
        """Epochs between evaluations (an MLPerf block)."""
        return 1

    @property
    def division(self) -> str:
        """The MLPerf division this configuration belongs to: "closed" or "open"."""
        return "open"

    def hyperparameters(self) -> dict[str, Any]:
        """MLPerf keys logged once before run_start: global_batch_size, opt_*, train_samples,
        eval_samples, gradient_accumulation_steps, ... (whatever the benchmark's rules ask)."""
        return {}

    # -- the run ---------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> None:
        """Load the data, build the model and the optimizer."""

    @abc.abstractmethod
    def train_epoch(self, epoch: int) -> None:
        """Train one epoch (epochs count from 0), calling ``ctx.report_step`` after each step."""

    @abc.abstractmethod
    def evaluate(self) -> float:
        """The model's quality on the evaluation set (the same value on every rank)."""

    def log_weights_initialization(self, log: Any) -> None:
        """Log the weights_initialization events that the benchmark's rules ask for."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run: model, optimizer, schedule, sampler state."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def converged(self, quality: float) -> bool:
        if quality != quality:  # NaN never converges
            return False
        return quality >= self.target if self.higher_is_better else quality <= self.target
