"""The reference's binary Criteo format, read by memory map in whole batches.

A split is ``<prefix>_<split>.bin``: rows of 40 little-endian int32 (label, 13 dense features,
26 categorical ids), written by preprocess.py as the reference's ``numpy_to_binary`` does; the
tables' sizes are ``counts`` in ``day_fea_count.npz`` beside it. Batch ``i`` is rows
``[i * B, (i + 1) * B)``, the last one possibly short (the reference's ``CriteoBinDataset``:
``num_batches = ceil(size / bytes_per_batch)``); its dense features are ``log(x + 1)`` in
float32, as the reference's ``_transform_features`` gives them.
"""
from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.dlrm.config import NUM_DENSE, NUM_SPARSE, ROW_INTS
from mlperf_fast.workloads.dlrm.preprocess import COUNTS_FILE

ROW_BYTES = 4 * ROW_INTS


@dataclass
class Batch:
    """``dense`` float32 [B, 13] (log(x + 1)), ``sparse`` int64 [B, 26] (row of each table),
    ``labels`` float32 [B] (0 or 1)."""

    dense: torch.Tensor
    sparse: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(*(t.to(device, non_blocking=non_blocking)
                       for t in (self.dense, self.sparse, self.labels)))

    def __len__(self) -> int:
        return self.labels.shape[0]


def read_counts(data_dir: str) -> tuple[int, ...]:
    path = os.path.join(data_dir, COUNTS_FILE)
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing (the table sizes the preprocessing writes)")
    try:
        with np.load(path) as f:
            counts = np.asarray(f["counts"])
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path} is not a counts file ({type(e).__name__}: {e})") from e
    if counts.shape != (NUM_SPARSE,) or (counts < 1).any():
        raise DataError(f"{path}: counts must be {NUM_SPARSE} positive integers, got "
                        f"{counts.tolist()}")
    return tuple(int(c) for c in counts)


def split_path(data_dir: str, split: str) -> str:
    """``<data_dir>/<prefix>_<split>.bin``, whatever the prefix (there must be one)."""
    found = sorted(glob.glob(os.path.join(glob.escape(data_dir), f"*_{split}.bin")))
    if not found:
        raise DataError(f"{data_dir}: no *_{split}.bin (run "
                        "python3 -m mlperf_fast.workloads.dlrm.preprocess on the raw days)")
    if len(found) > 1:
        raise DataError(f"{data_dir}: several *_{split}.bin files: {found}")
    return found[0]


class CriteoBinary:
    """One split, memory-mapped. ``batch(i)`` reads whole batch ``i`` of ``batch_size`` rows.

    ``counts``: the tables' sizes; every id read is checked against them (DataError naming the
    file and batch on one out of range: a corrupt or mismatched file)."""

    def __init__(self, path: str, batch_size: int, counts: tuple[int, ...]) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not os.path.isfile(path):
            raise DataError(f"{path} is missing")
        size = os.path.getsize(path)
        if size == 0 or size % ROW_BYTES:
            raise DataError(f"{path}: {size} bytes is not a whole number of {ROW_BYTES}-byte rows")
        self.path, self.batch_size = path, batch_size
        self.rows = np.memmap(path, dtype="<i4", mode="r").reshape(-1, ROW_INTS)
        self.num_samples = self.rows.shape[0]
        self.num_batches = math.ceil(self.num_samples / batch_size)
        self.counts = np.asarray(counts, dtype=np.int64)

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, i: int, stop: int | None = None) -> Batch:
        """Batch ``i`` (or batches ``i`` to ``stop`` - 1 as one)."""
        stop = i + 1 if stop is None else stop
        if not 0 <= i < stop <= self.num_batches:
            raise IndexError(f"batches [{i}, {stop}) out of range ({self.num_batches})")
        raw = np.asarray(self.rows[i * self.batch_size: stop * self.batch_size])
        labels = raw[:, 0]
        sparse = raw[:, 1 + NUM_DENSE:]
        if (sparse < 0).any() or (sparse >= self.counts).any() or \
                ((labels != 0) & (labels != 1)).any():
            raise DataError(f"{self.path}: batch {i} has a label that is not 0/1 or an id outside "
                            f"its table (sizes {self.counts.tolist()}): corrupt or mismatched")
        dense = torch.from_numpy(raw[:, 1:1 + NUM_DENSE].astype(np.float32))
        return Batch(torch.log(dense + 1),  # the reference's formula, bit for bit
                     torch.from_numpy(sparse.astype(np.int64)),
                     torch.from_numpy(labels.astype(np.float32)))


def check_dataset(data_dir: str) -> None:
    """DataError naming what is missing or malformed in a preprocessed data folder."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir} is not a folder")
    counts = read_counts(data_dir)
    for split in ("train", "test"):
        CriteoBinary(split_path(data_dir, split), 1, counts)
