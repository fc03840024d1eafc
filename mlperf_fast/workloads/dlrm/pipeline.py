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


def train_batches(data: CriteoBinary, seed: int, first_step: int, stop_step: int,
                  device: torch.device) -> Iterator[tuple[int, Batch]]:
    """``(global step, batch)`` for the steps ``[first_step, stop_step)``, one batch ahead."""
    spe = data.num_batches
    orders: dict[int, np.ndarray] = {}

    def load(g: int) -> Batch:
        epoch = g // spe
        if epoch not in orders:
            orders.clear()
            orders[epoch] = epoch_order(spe, seed, epoch)
        return _to_device(data.batch(int(orders[epoch][g % spe])), device)

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
