"""DLRM's input pipelines: the training batches in the reference's order, and the test set.

Training reads whole batches of the training file (data.CriteoBinary), in a seeded random
order of batches each epoch: the reference's ``--mlperf-bin-shuffle`` (a RandomSampler over the
batches of ``CriteoBinDataset``; rows within a batch keep their order). Progress is counted in
steps: global step ``g`` is batch ``order(g // steps_per_epoch)[g % steps_per_epoch]``, so a run
can stop and resume at any fraction of an epoch. On a GPU the next batch is read and copied
(pinned, non-blocking) while the current one trains.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mlperf_fast.workloads.dlrm.data import Batch, CriteoBinary


def epoch_order(num_batches: int, seed: int, epoch: int) -> np.ndarray:
    """The batches of ``epoch`` in the order they are trained (a permutation, seeded)."""
    return np.random.default_rng([seed, epoch]).permutation(num_batches)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type != "cuda":
        return batch
    return Batch(*(t.pin_memory() for t in (batch.dense, batch.sparse, batch.labels))).to(
        device, non_blocking=True)


def part(batch: Batch, rank: int, world: int) -> Batch:
    """Process ``rank``'s equal slice of a batch whose size ``world`` divides."""
    n = len(batch) // world
    rows = slice(rank * n, (rank + 1) * n)
    return Batch(batch.dense[rows], batch.sparse[rows], batch.labels[rows])


def padded_part(batch: Batch, rank: int, world: int) -> tuple[Batch, torch.Tensor]:
    """Process ``rank``'s slice of ``ceil(len / world)`` rows, padded with rows of zeros (id 0
    of every table), and which of its rows are real."""
    n = -(-len(batch) // world)
    start, stop = min(rank * n, len(batch)), min((rank + 1) * n, len(batch))
    pad = n - (stop - start)
    valid = torch.arange(n, device=batch.labels.device) < stop - start

    def take(t: torch.Tensor) -> torch.Tensor:
        t = t[start:stop]
        return torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t

    return Batch(take(batch.dense), take(batch.sparse), take(batch.labels)), valid


def train_batches(data: CriteoBinary, seed: int, first_step: int, stop_step: int,
                  device: torch.device, steps_per_epoch: int | None = None,
                  ) -> Iterator[tuple[int, Batch]]:
    """``(global step, batch)`` for the steps ``[first_step, stop_step)``, one batch ahead.
    ``steps_per_epoch`` (multi-process runs: the whole batches only) below the file's batch
    count leaves the short last batch out of every epoch's order."""
    spe = steps_per_epoch or data.num_batches
    orders: dict[int, np.ndarray] = {}

    def load(g: int) -> Batch:
        epoch = g // spe
        if epoch not in orders:
            orders.clear()
            orders[epoch] = order_of(epoch)
        return _to_device(data.batch(int(orders[epoch][g % spe])), device)

    if spe < data.num_batches:  # the short last batch must not be among those trained
        full = data.num_samples // data.batch_size

        def order_of(epoch: int) -> np.ndarray:
            o = epoch_order(data.num_batches, seed, epoch)
            return o[o < full][:spe]
    else:
        def order_of(epoch: int) -> np.ndarray:
            return epoch_order(spe, seed, epoch)

    if first_step >= stop_step:
        return
    ahead = load(first_step)
    for g in range(first_step, stop_step):
        current = ahead
        if g + 1 < stop_step:
            ahead = load(g + 1)
        yield g, current


def eval_batches(data: CriteoBinary, device: torch.device) -> Iterator[Batch]:
    """The test split in file order, one batch ahead."""
    if data.num_batches == 0:
        return
    ahead = _to_device(data.batch(0), device)
    for i in range(data.num_batches):
        current = ahead
        if i + 1 < data.num_batches:
            ahead = _to_device(data.batch(i + 1), device)
        yield current
