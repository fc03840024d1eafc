"""Input loading ahead of the training loop, and the time the loop spends waiting for it.

``load_ahead(make_batch, keys, workers)`` yields ``make_batch(key)`` for each key, in order,
computed ahead of the consumer:

- ``workers == 0``: on one thread of this process (the batch function's torch ops release the
  GIL). Best where cores are few: on a 2-core machine the model takes one and the input the other.
- ``workers > 0``: in that many worker processes (torch's DataLoader, forked, one intra-op thread
  each), for machines whose GPU trains faster than one core makes its input.

The batch function must be deterministic in its key (take any randomness from a seed in the key,
not from state carried between calls), so that the batches do not depend on the number of workers
or on their timing. ``WaitClock`` measures how long the consumer was blocked: its share of the
epoch says whether the input keeps up with the model.
"""
from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from mlperf_fast.harness.profiling import phase

K = TypeVar("K")
B = TypeVar("B")


class WaitClock:
    """Seconds the consumer of an iterator spent blocked in ``next``."""

    def __init__(self) -> None:
        self.waited = 0.0

    def timed(self, items: Iterable[B]) -> Iterator[B]:
        it = iter(items)
        while True:
            t0 = time.perf_counter()
            try:
                with phase("input"):
                    item = next(it)
            except StopIteration:
                return
            self.waited += time.perf_counter() - t0
            yield item


def default_workers(reserved: int = 2, cap: int = 12) -> int:
    """Worker processes for a machine: the cores beyond ``reserved`` (the training process and
    its launcher), at most ``cap``; 0 (a thread) on small machines."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(cap, (cores or 1) - reserved))


def _ahead_on_thread(make_batch: Callable[[K], B], keys: Sequence[K], depth: int) -> Iterator[B]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: collections.deque = collections.deque()
        it = iter(keys)
        for key in it:
            pending.append(pool.submit(make_batch, key))
            if len(pending) >= depth:
                break
        for key in it:
            yield pending.popleft().result()
            pending.append(pool.submit(make_batch, key))
        while pending:
            yield pending.popleft().result()


class _Keys(torch.utils.data.Dataset):
    def __init__(self, make_batch: Callable[[Any], Any], keys: Sequence[Any]) -> None:
        self.make_batch, self.keys = make_batch, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Any:
        return self.make_batch(self.keys[i])


def load_ahead(make_batch: Callable[[K], B], keys: Sequence[K], workers: int = 0,
               depth: int = 2, pin_memory: bool = False) -> Iterator[B]:
    """``make_batch(key)`` for each of ``keys``, in order, computed ``depth`` batches ahead per
    worker (see the module's docstring)."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0 or len(keys) <= 1:
        yield from _ahead_on_thread(make_batch, keys, depth)
        return
    import multiprocessing

    loader = torch.utils.data.DataLoader(
        _Keys(make_batch, keys), batch_size=None, shuffle=False,
        num_workers=min(workers, len(keys)), prefetch_factor=depth, pin_memory=pin_memory,
        multiprocessing_context=multiprocessing.get_context("fork"))
    yield from loader
