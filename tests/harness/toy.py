"""A small workload that really learns, for testing the harness: a 2-layer MLP classifying
points whose labels come from a planted random linear teacher. Not a registered benchmark.

Data: ``train.npz`` and ``eval.npz`` (arrays ``x`` float32 (N, 16), ``y`` int64 (N,)) in a data
dir, or the same arrays generated in memory from a fixed seed when there is none.

Environment hooks for the tests: TOY_KILL_AT_EPOCH=k kills the process with SIGKILL when epoch k
begins; TOY_SAVE_WEIGHTS=1 saves each rank's weights and step counts after every block to
<output>/weights_rank<r>.pt.
"""
from __future__ import annotations

import os
import signal
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from mlperf_fast.harness import DataError, RunContext, Workload
from mlperf_fast.harness.step import TrainStep
from mlperf_fast.harness.workload import Metric, Schedule, WorkloadConfig

DIM, CLASSES = 16, 4


@dataclass(frozen=True, kw_only=True)
class ToyConfig(WorkloadConfig):
    name: str = "default"
    targets: tuple[Metric, ...] = (Metric("accuracy", 0.95),)
    schedule: Schedule = Schedule(unit="epoch", every=1, budget=20)
    global_batch_size: int = 64
    lr: float = 0.02
    train_samples: int = 4096
    eval_samples: int = 1024
    #: test hook: (rank, optimizer step) at which that rank's loss is made NaN, or at which the
    #: step's batch is left out on every rank (``skip_step``)
    nan_at: tuple[int, int] | None = None
    skip_step: int | None = None


CONFIGS = {
    "default": ToyConfig(),
    "two_per_block": ToyConfig(name="two_per_block", schedule=Schedule(every=2, budget=20)),
    # never converges: for runs that must go the whole budget (resume, scoring)
    "unreachable": ToyConfig(name="unreachable", targets=(Metric("accuracy", 1.01),),
                             schedule=Schedule(budget=5)),
    # the frame's schedules: progress in samples; evaluations every quarter epoch; evaluations
    # only from epoch 4 on; two targets that must both hold
    "samples": ToyConfig(name="samples", schedule=Schedule(unit="sample", every=1000,
                                                           budget=80_000)),
    "fractional": ToyConfig(name="fractional", schedule=Schedule(every=0.25, budget=20)),
    "late": ToyConfig(name="late", schedule=Schedule(every=1, first=4, budget=20)),
    "two_targets": ToyConfig(name="two_targets", targets=(
        Metric("accuracy", 0.9, log_key="ACC"),
        Metric("loss", 0.1, higher_is_better=False, log_key="LOSS"))),
    # a non-finite loss on rank 1 at the 10th step, and the same run without that step
    "nan_rank1_step10": ToyConfig(name="nan_rank1_step10", targets=(Metric("accuracy", 1.01),),
                                  schedule=Schedule(budget=1), nan_at=(1, 10)),
    "skip_step10": ToyConfig(name="skip_step10", targets=(Metric("accuracy", 1.01),),
                             schedule=Schedule(budget=1), skip_step=10),
}


def planted_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    teacher = np.random.default_rng(1234).normal(size=(DIM, CLASSES))  # one for every split
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    y = (x @ teacher).argmax(axis=1).astype(np.int64)
    return x, y


def write_data(data_dir: str, cfg: ToyConfig = CONFIGS["default"]) -> None:
    os.makedirs(data_dir, exist_ok=True)
    for name, n, seed in (("train", cfg.train_samples, 1), ("eval", cfg.eval_samples, 2)):
        x, y = planted_data(n, seed)
        np.savez(os.path.join(data_dir, f"{name}.npz"), x=x, y=y)


def read_split(data_dir: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    path = os.path.join(data_dir, f"{name}.npz")
    if not os.path.exists(path):
        raise DataError(f"{path} is missing")
    try:
        with np.load(path) as f:
            x, y = f["x"], f["y"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a valid split ({e})") from e
    if x.ndim != 2 or x.shape[1] != DIM or y.shape != (x.shape[0],):
        raise DataError(f"{path}: expected x (N, {DIM}) and y (N,), got {x.shape} and {y.shape}")
    return x, y


class ToyWorkload(Workload):
    benchmark = "toy"
    quality_name = "accuracy"

    @classmethod
    def configs(cls) -> dict[str, ToyConfig]:
        return CONFIGS

    @classmethod
    def default_config(cls, data_dir: str | None) -> str:
        return "default"

    @classmethod
    def check_data(cls, config: ToyConfig, data_dir: str | None) -> None:
        if data_dir is not None:
            for name in ("train", "eval"):
                read_split(data_dir, name)

    def __init__(self, config: ToyConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)

    def hyperparameters(self) -> dict:
        return {"global_batch_size": self.config.global_batch_size, "opt_name": "sgd",
                "opt_base_learning_rate": self.config.lr,
                "gradient_accumulation_steps": 1,
                "train_samples": self.config.train_samples,
                "eval_samples": self.config.eval_samples}

    def build(self) -> None:
        cfg, ctx = self.config, self.ctx
        if ctx.data_dir is None:
            train, evals = planted_data(cfg.train_samples, 1), planted_data(cfg.eval_samples, 2)
        else:
            train, evals = read_split(ctx.data_dir, "train"), read_split(ctx.data_dir, "eval")
        self.x, self.y = (torch.from_numpy(a).to(ctx.device) for a in train)
        self.ex, self.ey = (torch.from_numpy(a).to(ctx.device) for a in evals)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(DIM, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES)
        ).to(ctx.device)
        self.ddp = ctx.wrap_model(self.model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=0.9)
        self.trainer = TrainStep(_Loss(self.ddp), self.opt, params=list(self.model.parameters()))
        self.batches_seen = 0

    def _steps_per_epoch(self) -> int:
        return self.config.train_samples // self.config.global_batch_size

    def _step_index(self, progress: float) -> int:
        """The global step at which ``progress`` (in the schedule's unit) is reached."""
        unit, gbs = self.config.schedule.unit, self.config.global_batch_size
        if unit == "epoch":
            return round(progress * self._steps_per_epoch())
        if unit == "sample":
            return -(-int(progress) // gbs)
        return int(progress)  # iterations are steps

    def train(self, start: float, stop: float) -> float | None:
        kill_at = os.environ.get("TOY_KILL_AT_EPOCH")
        if kill_at is not None and int(kill_at) == int(start):
            os.kill(os.getpid(), signal.SIGKILL)
        cfg, ctx = self.config, self.ctx
        gbs, spe = cfg.global_batch_size, self._steps_per_epoch()
        per_rank = gbs // ctx.world_size
        first, last = self._step_index(start), self._step_index(stop)
        order, order_epoch = None, None
        for step in range(first, last):
            epoch, pos = divmod(step, spe)
            if order_epoch != epoch:
                g = torch.Generator().manual_seed(ctx.seed * 1000 + epoch)
                order, order_epoch = torch.randperm(len(self.x), generator=g).to(ctx.device), epoch
            self.batches_seen += 1
            if cfg.skip_step == self.batches_seen:
                continue
            idx = order[pos * gbs + ctx.rank * per_rank: pos * gbs + (ctx.rank + 1) * per_rank]
            poison = cfg.nan_at == (ctx.rank, self.batches_seen)
            result = self.trainer.step([(self.x[idx], self.y[idx], poison)], 1)
            ctx.report_step(gbs, result.loss)
        if os.environ.get("TOY_SAVE_WEIGHTS"):  # the last save is the one that stays
            torch.save({"model": self.model.state_dict(), "applied": self.trainer.applied,
                        "skipped": self.trainer.skipped},
                       os.path.join(ctx.output_dir, f"weights_rank{ctx.rank}.pt"))
        return last * gbs if cfg.schedule.unit == "sample" else None

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        logits = self.model(self.ex)
        return {"accuracy": (logits.argmax(1) == self.ey).float().mean().item(),
                "loss": F.cross_entropy(logits, self.ey).item()}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "step": self.trainer.state_dict(), "batches_seen": self.batches_seen}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.trainer.load_state_dict(state["step"])
        self.batches_seen = state["batches_seen"]


class _Loss(torch.nn.Module):
    """The training loss as a module's forward (for DistributedDataParallel's hooks)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor, poison: bool = False) -> torch.Tensor:
        loss = F.cross_entropy(self.model(x), y)
        return loss * float("nan") if poison else loss


class ToyNeedingAModule(ToyWorkload):
    """The toy, needing a module that is not installed (the CLI must say which extra to install)."""

    requires = ("mlperf_fast_no_such_module",)
    extra = "toy"


class ToyClosedSSD(ToyWorkload):
    """The toy, trained with Adam and logging what closed_ssd.yaml (RetinaNet in the 2.1 round)
    checks, for the submission export's test: its accuracy stands in for the mAP, and the tensors
    it names at weights_initialization are the ones the rules list (read from the rules file)."""

    benchmark = "ssd"

    @classmethod
    def configs(cls) -> dict[str, ToyConfig]:
        return {"closed": ToyConfig(name="closed", division="closed", lr=0.01,
                                    targets=(Metric("accuracy", 0.85),))}

    @classmethod
    def default_config(cls, data_dir: str | None) -> str:
        return "closed"

    def build(self) -> None:
        super().build()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.trainer = TrainStep(_Loss(self.ddp), self.opt, params=list(self.model.parameters()))

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "opt_name": "adam", "opt_weight_decay": 0.0,
                "opt_learning_rate_warmup_epochs": 0, "opt_learning_rate_warmup_factor": 0}

    def log_weights_initialization(self, log) -> None:
        import re

        from mlperf_fast.harness.compliance import rules_path

        with open(rules_path("closed_ssd.yaml")) as f:
            for name in re.findall(r'"(module\.[^"]+)"', f.read()):
                log.event("weights_initialization", metadata={"tensor": name})
