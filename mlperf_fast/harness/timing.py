"""Timing, written once for the harness, the benchmarks and the step measurements.

GPU work is asynchronous: ``time_fn`` synchronizes and times with CUDA events around each call,
after warm-up, and returns every sample so that callers report medians and spreads.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], *, device: torch.device | str = "cuda", warmup: int = 3,
            repeat: int = 20, min_time_s: float = 0.0) -> list[float]:
    """Seconds per call of ``fn``: ``repeat`` samples (more, until ``min_time_s`` has passed),
    after ``warmup`` calls. CUDA events on a GPU, perf_counter on the CPU."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start_wall = time.perf_counter()
    if device.type == "cuda":
        synchronize(device)
        while len(samples) < repeat or time.perf_counter() - start_wall < min_time_s:
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end) / 1000.0)
    else:
        while len(samples) < repeat or time.perf_counter() - start_wall < min_time_s:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


class Stopwatch:
    """Wall-clock seconds, synchronizing the device first so GPU work is counted."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.start = self._now()

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def elapsed(self) -> float:
        return self._now() - self.start
