"""A progress bar for training: progress in the schedule's unit (moving with every step when the
workload says where it is), loss, last quality, throughput and tqdm's ETA. Status lines go
through ``write`` so that they print above the bar instead of into it. Quiet when stderr is not a
terminal (CI logs, files), where the lines still print plainly."""
from __future__ import annotations

import sys
import time
from collections.abc import Mapping

import torch


class Progress:
    def __init__(self, total: float, desc: str, unit: str = "epoch", enabled: bool = True,
                 refresh_s: float = 0.5) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.refresh_s = refresh_s
        self.total = total
        self._bar = None
        self._samples = 0
        self._t0 = time.perf_counter()
        self._last_refresh = 0.0
        self._loss: torch.Tensor | float | None = None
        self._quality: Mapping[str, float] | None = None
        self._desc, self._unit = desc, unit

    def start(self, done: float) -> None:
        """The bar appears when training starts (data generation and the model's build print
        their own lines before it), at ``done`` of the total."""
        self._t0 = time.perf_counter()
        self._samples = 0
        if self.enabled and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=done, desc=self._desc, unit=self._unit,
                             dynamic_ncols=True, file=sys.stderr, leave=True,
                             bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} {unit}s "
                                        "[{elapsed}<{remaining}{postfix}]")

    def step(self, samples: int, loss: torch.Tensor | float | None = None,
             at: float | None = None) -> None:
        """After a step: ``samples`` trained, the step's loss, and where the run is now (in the
        schedule's unit), if the workload knows."""
        self._samples += samples
        if loss is not None:
            self._loss = loss
        if self._bar is None:
            return
        if at is not None:
            self._bar.n = min(at, self.total)
        now = time.perf_counter()
        if now - self._last_refresh >= self.refresh_s:
            self._last_refresh = now
            self._show(now)

    def advance_to(self, done: float) -> None:
        if self._bar is not None:
            self._bar.n = min(done, self.total)
            self._bar.refresh()

    def quality(self, value: Mapping[str, float]) -> None:
        self._quality = value
        if self._bar is not None:
            self._show(time.perf_counter())

    def write(self, message: str) -> None:
        """A status line, printed above the bar (plainly to stderr without one)."""
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def _show(self, now: float) -> None:
        post = {}
        if self._loss is not None:
            loss = self._loss.item() if isinstance(self._loss, torch.Tensor) else self._loss
            post["loss"] = f"{loss:.4g}"
        if self._quality is not None:
            for name, value in self._quality.items():
                post[name] = f"{value:.4g}"
        post["samples/s"] = f"{self._samples / max(now - self._t0, 1e-9):.4g}"
        self._bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
