"""The per-step log of a run: ``steps.jsonl`` beside mlperf.log, one JSON object per training
step (step, seconds since run_start, progress, samples, loss, samples per second, and whatever the
workload adds: learning rate, time waiting for input), and TensorBoard scalars when tensorboard is
installed. Losses stay on the device until a flush (every ``flush_every`` steps and at each block's
end), so logging costs one device read per flush, not one per step."""
from __future__ import annotations

import importlib.util
import json
import os
import time
from typing import Any

import torch

from mlperf_fast.harness.mllog import now_ms
from mlperf_fast.harness.workload import DryRunComplete


class StepLog:
    def __init__(self, path: str | None, run_start: int | None = None, resume: bool = False,
                 dry_run_steps: int | None = None, flush_every: int = 50,
                 profiler: Any = None) -> None:
        self.path = path
        self.run_start_ms = run_start
        self.dry_run_steps = dry_run_steps
        self.profiler = profiler
        self.flush_every = flush_every
        self.count = 0
        self._pending: list[dict[str, Any]] = []
        self._losses: list[torch.Tensor | float | None] = []
        self._last_t = time.perf_counter()
        self._file = open(path, "a" if resume else "w") if path else None
        self._tb = None
        if path and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(os.path.dirname(path), "tensorboard"))

    def record(self, samples: int, loss: torch.Tensor | float | None, at: float | None,
               extra: dict[str, float]) -> None:
        self.count += 1
        now = time.perf_counter()
        row: dict[str, Any] = {"step": self.count, "samples": samples}
        if self.run_start_ms is not None:
            row["time_s"] = round((now_ms() - self.run_start_ms) / 1000.0, 3)
        if at is not None:
            row["progress"] = round(at, 6)
        dt = now - self._last_t
        self._last_t = now
        row["samples_per_s"] = round(samples / dt, 2) if dt > 0 else None
        row.update({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in extra.items()})
        self._pending.append(row)
        self._losses.append(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        if len(self._pending) >= self.flush_every:
            self.flush()
        if self.profiler is not None:
            self.profiler.on_step(self.count)
            if self.profiler.done:
                self.flush()
                raise DryRunComplete(self.count)
        if self.dry_run_steps is not None and self.count >= self.dry_run_steps:
            self.flush()
            raise DryRunComplete(self.count)

    def flush(self) -> None:
        if not self._pending:
            return
        tensors = [x for x in self._losses if isinstance(x, torch.Tensor)]
        values = iter(torch.stack([t.float().reshape(()) for t in tensors]).tolist()
                      if tensors else [])
        for row, loss in zip(self._pending, self._losses):
            if isinstance(loss, torch.Tensor):
                row["loss"] = next(values)
            elif loss is not None:
                row["loss"] = float(loss)
            if self._file is not None:
                self._file.write(json.dumps(row) + "\n")
            if self._tb is not None:
                for key in ("loss", "lr", "samples_per_s", "input_wait_s"):
                    if row.get(key) is not None:
                        self._tb.add_scalar(key, row[key], row["step"])
        if self._file is not None:
            self._file.flush()
        self._pending, self._losses = [], []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._tb is not None:
                self._tb.close()
                self._tb = None
