"""Samplers of global batches, deterministic in (seed, epoch) and the same on every rank, each
rank taking its slice of every global batch.

- ``ShuffledBatches``: a fresh permutation per epoch, cut into global batches (the remainder
  dropped), the usual sampler of image and text benchmarks.
- ``BucketingSampler``: batches of similar lengths, the RNN-T reference's (common/data/dali/
  sampler.py BucketingSampler).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _check_split(global_batch: int, world_size: int, n: int, what: str) -> None:
    if global_batch < 1:
        raise ValueError(f"global_batch must be >= 1, got {global_batch}")
    if world_size < 1 or global_batch % world_size:
        raise ValueError(f"global_batch {global_batch} is not divisible by world_size "
                         f"{world_size}")
    if n < global_batch:
        raise ValueError(f"{n} {what} make no batch of {global_batch}")


class ShuffledBatches:
    """``n`` samples in global batches of ``global_batch``, shuffled anew each epoch."""

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        _check_split(global_batch, world_size, n, "samples")
        self.n, self.global_batch = n, global_batch
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def __len__(self) -> int:
        return self.n // self.global_batch

    def epoch(self, epoch: int) -> list[list[int]]:
        """This rank's batches (lists of sample indices) for ``epoch``."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        batches = order[:len(self) * self.global_batch].reshape(len(self), self.global_batch)
        per_rank = self.global_batch // self.world_size
        return [b[self.rank * per_rank:(self.rank + 1) * per_rank].tolist() for b in batches]


class BucketingSampler:
    """Batches of similar durations: utterances sorted by duration are split into
    ``num_buckets`` buckets, each shuffled; the concatenation is cut into global batches (the
    remainder dropped at random), the batches shuffled, and each global batch split over the
    ranks."""

    def __init__(self, durations: Sequence[float], global_batch: int, num_buckets: int,
                 seed: int, rank: int = 0, world_size: int = 1) -> None:
        d = np.asarray(durations, dtype=np.float64)
        if d.ndim != 1:
            raise ValueError(f"durations must be a sequence of numbers, got shape {d.shape}")
        bad = ~np.isfinite(d) | (d < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"durations must be finite and >= 0; durations[{i}] is {d[i]}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        _check_split(global_batch, world_size, len(d), "utterances")
        self.order = np.argsort(d, kind="stable")
        self.global_batch, self.num_buckets = global_batch, num_buckets
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def __len__(self) -> int:
        return len(self.order) // self.global_batch

    def epoch(self, epoch: int) -> list[list[int]]:
        """This rank's batches (lists of utterance indices) for ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        shuffled = np.concatenate([rng.permutation(b)
                                   for b in np.array_split(self.order, self.num_buckets)])
        drop = len(shuffled) - len(self) * self.global_batch
        if drop:
            shuffled = np.delete(shuffled, rng.choice(len(shuffled), drop, replace=False))
        batches = shuffled.reshape(len(self), self.global_batch)
        rng.shuffle(batches, axis=0)
        per_rank = self.global_batch // self.world_size
        return [b[self.rank * per_rank:(self.rank + 1) * per_rank].tolist() for b in batches]


def split_micro_batches(batch: Sequence[int], micro_batch: int) -> list[list[int]]:
    """``batch`` cut into consecutive pieces of at most ``micro_batch`` (accumulation)."""
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    return [list(batch[i:i + micro_batch]) for i in range(0, len(batch), micro_batch)]


def accumulation_steps(global_batch: int, world_size: int, micro_batch: int) -> int:
    """Micro-batches per optimizer step on each rank."""
    return max(1, math.ceil(global_batch // world_size / micro_batch))
