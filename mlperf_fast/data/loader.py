"""Input loading ahead of the training loop, and the time the loop spends waiting for it.

``load_ahead(make_batch, keys, workers)`` yields ``make_batch(key)`` for each key, in order,
computed ahead of the consumer:

- ``workers == 0``: on one thread of this process (the batch function's torch ops release the
  GIL). Best where cores are few: on a 2-core machine the model takes one and the input the other.
- ``workers > 0``: in that many worker processes (torch's DataLoader, forked, one intra-op thread
  each), for machines whose GPU trains faster than one core makes its input.
- ``workers`` a :class:`WorkerPool`: in its worker processes, which outlive the call: an epoch
  does not fork its workers again (on a GPU that runs a small model's epoch in a second, forking
  12 workers and filling their queues took half of it).

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


class _KeySampler(torch.utils.data.Sampler):
    """The keys of the current call; the DataLoader hands each to a worker as its "index"."""

    def __init__(self) -> None:
        self.keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _ByKey(torch.utils.data.Dataset):
    """``make_batch`` as a dataset indexed by the keys themselves, which the DataLoader's sampler
    (the keys, in order) hands to the workers one by one."""

    def __init__(self, make_batch: Callable[[Any], Any]) -> None:
        self.make_batch = make_batch

    def __getitem__(self, key: Any) -> Any:
        return self.make_batch(key)


class WorkerPool:
    """``workers`` processes kept from one :func:`load_ahead` call to the next (torch's
    DataLoader with persistent workers, forked, ``depth`` batches ahead per worker).

    The workers hold the batch function they were forked with; a call with a function that is
    not equal (``==``) to it replaces them. Batch functions used with a pool should therefore
    compare equal when they compute the same batches (ResNet's compare their image set by
    identity, and their settings). ``close()`` ends the processes (as does garbage collection).
    """

    def __init__(self, workers: int, depth: int = 2, pin_memory: bool = False) -> None:
        if workers < 1:
            raise ValueError(f"a WorkerPool needs workers >= 1, got {workers}")
        self.workers, self.depth, self.pin_memory = int(workers), int(depth), bool(pin_memory)
        self._make_batch: Callable | None = None
        self._loader: torch.utils.data.DataLoader | None = None
        self._sampler = _KeySampler()
        self.forks = 0  # how many times the workers were started (tests read it)

    def run(self, make_batch: Callable[[K], B], keys: Sequence[K]) -> Iterator[B]:
        """``make_batch(key)`` for each of ``keys``, in order, in the pool's workers."""
        import multiprocessing

        if self._loader is None or not (make_batch is self._make_batch
                                        or make_batch == self._make_batch):
            self.close()
            self._make_batch = make_batch
            self._loader = torch.utils.data.DataLoader(
                _ByKey(make_batch), batch_size=None, sampler=self._sampler,
                num_workers=self.workers, prefetch_factor=self.depth, persistent_workers=True,
                pin_memory=self.pin_memory,
                multiprocessing_context=multiprocessing.get_context("fork"))
            self.forks += 1
        self._sampler.keys = list(keys)
        if self._sampler.keys:
            yield from self._loader

    def close(self) -> None:
        self._loader, self._make_batch = None, None


def load_ahead(make_batch: Callable[[K], B], keys: Sequence[K], workers: int | WorkerPool = 0,
               depth: int = 2, pin_memory: bool = False) -> Iterator[B]:
    """``make_batch(key)`` for each of ``keys``, in order, computed ``depth`` batches ahead per
    worker (see the module's docstring); with a :class:`WorkerPool`, its depth and pinning."""
    if isinstance(workers, WorkerPool):
        yield from workers.run(make_batch, keys)
        return
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0 or len(keys) <= 1:
        yield from _ahead_on_thread(make_batch, keys, depth)
        return
    import multiprocessing

    loader = torch.utils.data.DataLoader(
        _ByKey(make_batch), batch_size=None, sampler=list(keys),
        num_workers=min(workers, len(keys)), prefetch_factor=depth, pin_memory=pin_memory,
        multiprocessing_context=multiprocessing.get_context("fork"))
    yield from loader
