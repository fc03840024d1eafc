"""A progress bar for training: epoch, loss, last quality and throughput. Quiet when stderr is
not a terminal (CI logs, files), where the MLPerf log lines already show each block."""
from __future__ import annotations

import sys
import time

import torch


class Progress:
    def __init__(self, total_epochs: int, desc: str, enabled: bool = True,
                 quality_name: str = "quality", refresh_s: float = 0.5) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.quality_name = quality_name
        self.refresh_s = refresh_s
        self._bar = None
        self._samples = 0
        self._t0 = time.perf_counter()
        self._last_refresh = 0.0
        self._loss: torch.Tensor | float | None = None
        self._quality: float | None = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total_epochs, desc=desc, unit="epoch", dynamic_ncols=True,
                             file=sys.stderr, leave=True)

    def start(self, epochs_done: int) -> None:
        self._t0 = time.perf_counter()
        self._samples = 0
        if self._bar is not None:
            self._bar.n = epochs_done
            self._bar.refresh()

    def step(self, samples: int, loss: torch.Tensor | float | None = None) -> None:
        self._samples += samples
        if loss is not None:
            self._loss = loss
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last_refresh >= self.refresh_s:
            self._last_refresh = now
            self._show(now)

    def epoch_done(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def quality(self, value: float) -> None:
        self._quality = value
        if self._bar is not None:
            self._show(time.perf_counter())

    def _show(self, now: float) -> None:
        post = {}
        if self._loss is not None:
            loss = self._loss.item() if isinstance(self._loss, torch.Tensor) else self._loss
            post["loss"] = f"{loss:.4g}"
        if self._quality is not None:
            post[self.quality_name] = f"{self._quality:.4g}"
        post["samples/s"] = f"{self._samples / max(now - self._t0, 1e-9):.4g}"
        self._bar.set_postfix(post, refresh=True)

    def samples_per_second(self) -> float:
        return self._samples / max(time.perf_counter() - self._t0, 1e-9)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
