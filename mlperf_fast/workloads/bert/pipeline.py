"""BERT's input order: every training sequence once per epoch, shards in a seeded order and
rows shuffled within each shard (a shard is read only while its rows are being used), cut into
global batches; each process takes its slice of each global batch. Positions are counted in
samples, so a run resumes at any sample count (the harness's unit for BERT)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from mlperf_fast.workloads.bert.data import Shard


class SampleStream:
    """``rows(start, count)``: (shard index, row) pairs of stream positions ``[start, start +
    count)``, int64 [count, 2]. ``counts``: rows per shard."""

    def __init__(self, counts: Sequence[int], seed: int) -> None:
        self.counts = np.asarray(counts, dtype=np.int64)
        if len(self.counts) == 0 or self.counts.sum() == 0:
            raise ValueError("no training sequences")
        self.total = int(self.counts.sum())
        self.seed = seed

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.counts))
        return order, np.concatenate([[0], np.cumsum(self.counts[order])])

    def rows(self, start: int, count: int) -> np.ndarray:
        out = np.empty((count, 2), dtype=np.int64)
        done = 0
        while done < count:
            pos = start + done
            epoch, offset = divmod(pos, self.total)
            order, bounds = self._epoch_order(epoch)
            k = int(np.searchsorted(bounds, offset, side="right") - 1)
            shard = int(order[k])
            perm = np.random.default_rng([self.seed, epoch, shard]).permutation(
                int(self.counts[shard]))
            lo = offset - int(bounds[k])
            take = min(count - done, int(self.counts[shard]) - lo)
            out[done:done + take, 0] = shard
            out[done:done + take, 1] = perm[lo:lo + take]
            done += take
        return out


def train_batches(stream: SampleStream, load: Callable[[int], Shard], start: int, stop: int,
                  global_batch: int, rank: int = 0, world_size: int = 1
                  ) -> Iterator[tuple[int, dict]]:
    """(samples reached, this process's batch) for each global batch from sample ``start`` while
    fewer than ``stop`` samples have been trained (the last batch may pass ``stop``: whole
    batches only). ``load(shard)`` returns a shard (the caller caches)."""
    per = global_batch // world_size
    pos = start
    while pos < stop:
        rows = stream.rows(pos, global_batch)[rank * per:(rank + 1) * per]
        parts = []
        for shard in np.unique(rows[:, 0]):
            mine = rows[rows[:, 0] == shard, 1]
            parts.append((np.flatnonzero(rows[:, 0] == shard), load(int(shard)).batch(mine)))
        batch = _merge(parts, len(rows))
        pos += global_batch
        yield pos, batch


def _merge(parts, n: int) -> dict:
    if len(parts) == 1:
        return parts[0][1]
    import torch

    out = {}
    for key in parts[0][1]:
        first = parts[0][1][key]
        full = torch.empty((n, *first.shape[1:]), dtype=first.dtype)
        for where, batch in parts:
            full[torch.from_numpy(where)] = batch[key]
        out[key] = full
    return out


def eval_batches(shard: Shard, batch: int, rank: int = 0, world_size: int = 1
                 ) -> Iterator[dict]:
    """This process's share of the evaluation set (sequence i goes to process i % world_size),
    in batches; every process yields the same number of batches (a last short one may be
    empty)."""
    mine = np.arange(rank, len(shard), world_size)
    per_rank = -(-len(shard) // world_size)
    for lo in range(0, per_rank, batch):
        rows = mine[lo:lo + batch]
        yield shard.batch(rows)
