"""BERT's pretraining data, read without TensorFlow: NVIDIA's hdf5 shards (the fixed-length
layout, the variable-length one and the packed one) and the reference's TFRecords, all into one
in-memory form per shard.

Layouts, by what a shard holds:

- hdf5, fixed length (``input_mask`` present): ``input_ids`` [N, L], ``input_mask``,
  ``segment_ids``, ``masked_lm_positions`` [N, P], ``masked_lm_ids`` [N, P],
  ``next_sentence_labels`` [N]; padded with zeros (a position 0 is padding: position 0 is always
  [CLS], never masked);
- hdf5, variable length (no ``input_mask``; ``input_ids`` a vlen dataset): each row holds only
  its own tokens and masked positions (NVIDIA's convert_fixed2variable output);
- hdf5, packed (``packed_input_len`` present): each row several sequences back to back, with
  ``packed_input_len`` and ``packed_masked_lm_len`` giving their lengths and the positions
  offset by the sequences before; read back as the separate sequences;
- TFRecord: tf.train.Examples with ``input_ids``, ``input_mask``, ``segment_ids``,
  ``masked_lm_positions``, ``masked_lm_ids``, ``masked_lm_weights``, ``next_sentence_labels``
  (the reference's run_pretraining.py input), positions kept where the weight is non-zero.

A data directory has ``train/`` and ``eval/`` folders of shards (``*.hdf5``/``*.h5``, or
``*.tfrecord*`` / files without an extension holding TFRecords).
"""
from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mlperf_fast.harness.workload import DataError

KEYS = ("input_ids", "segment_ids", "masked_lm_positions", "masked_lm_ids",
        "next_sentence_labels")


@dataclass
class Shard:
    """Sequences as fixed-size arrays: ``input_ids``/``segment_ids``/``input_mask`` int32
    [N, L], ``masked_lm_positions``/``masked_lm_ids`` int32 [N, P] (padding 0),
    ``next_sentence_labels`` int32 [N]."""

    input_ids: np.ndarray
    segment_ids: np.ndarray
    input_mask: np.ndarray
    masked_lm_positions: np.ndarray
    masked_lm_ids: np.ndarray
    next_sentence_labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def head(self, n: int) -> Shard:
        """The first ``n`` sequences."""
        return Shard(*(getattr(self, f.name)[:n] for f in dataclasses.fields(self)))

    def batch(self, rows: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Rows as the model's inputs: int64 tensors, ``masked_lm_weights`` float32 (1 where a
        position is a prediction)."""
        rows = np.asarray(rows)
        pos = torch.from_numpy(self.masked_lm_positions[rows].astype(np.int64))
        return {"input_ids": torch.from_numpy(self.input_ids[rows].astype(np.int64)),
                "token_type_ids": torch.from_numpy(self.segment_ids[rows].astype(np.int64)),
                "attention_mask": torch.from_numpy(self.input_mask[rows].astype(np.int64)),
                "masked_lm_positions": pos,
                "masked_lm_ids": torch.from_numpy(self.masked_lm_ids[rows].astype(np.int64)),
                "masked_lm_weights": (pos != 0).float(),
                "next_sentence_labels": torch.from_numpy(
                    self.next_sentence_labels[rows].astype(np.int64))}


def _pack(rows_ids, rows_seg, rows_pos, rows_mlm, nsp, max_len: int, max_pred: int,
          where: str) -> Shard:
    n = len(rows_ids)
    out = Shard(*(np.zeros((n, max_len), np.int32) for _ in range(3)),
                np.zeros((n, max_pred), np.int32), np.zeros((n, max_pred), np.int32),
                np.asarray(nsp, np.int32).reshape(n))
    for k in range(n):
        t, p = len(rows_ids[k]), len(rows_pos[k])
        if t > max_len or p > max_pred:
            raise DataError(f"{where}: sequence {k} has {t} tokens and {p} predictions, more than "
                            f"max_seq_length {max_len} / max_predictions {max_pred}")
        if len(rows_seg[k]) != t or len(rows_mlm[k]) != p:
            raise DataError(f"{where}: sequence {k}: lengths of its fields disagree")
        out.input_ids[k, :t] = rows_ids[k]
        out.segment_ids[k, :t] = rows_seg[k]
        out.input_mask[k, :t] = 1
        out.masked_lm_positions[k, :p] = rows_pos[k]
        out.masked_lm_ids[k, :p] = rows_mlm[k]
    return out


def _check(shard: Shard, where: str, vocab_size: int | None) -> Shard:
    if vocab_size is not None and len(shard) and (
            shard.input_ids.max() >= vocab_size or shard.masked_lm_ids.max() >= vocab_size
            or shard.input_ids.min() < 0):
        raise DataError(f"{where}: token ids outside the vocabulary of {vocab_size}")
    lengths = shard.input_mask.sum(1)
    if len(shard) and ((shard.masked_lm_positions >= lengths[:, None]) &
                       (shard.masked_lm_positions != 0)).any():
        raise DataError(f"{where}: a masked position lies beyond its sequence")
    return shard


def _read_hdf5(path: str, max_len: int, max_pred: int) -> Shard:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable hdf5 file ({e})") from e
    with f:
        missing = [k for k in KEYS if k not in f]
        if missing:
            raise DataError(f"{path}: no {missing} (keys: {sorted(f.keys())})")
        if "packed_input_len" in f:
            ids, seg, pos, mlm, nsp = [], [], [], [], []
            for r in range(len(f["input_ids"])):
                lens, plens = f["packed_input_len"][r], f["packed_masked_lm_len"][r]
                t0 = p0 = 0
                for k, (t, p) in enumerate(zip(lens, plens)):
                    ids.append(f["input_ids"][r][t0:t0 + t])
                    seg.append(f["segment_ids"][r][t0:t0 + t])
                    pos.append(f["masked_lm_positions"][r][p0:p0 + p] - t0)
                    mlm.append(f["masked_lm_ids"][r][p0:p0 + p])
                    nsp.append(f["next_sentence_labels"][r][k])
                    t0, p0 = t0 + t, p0 + p
            return _pack(ids, seg, pos, mlm, nsp, max_len, max_pred, path)
        if "input_mask" in f:
            ids = f["input_ids"][:]
            if ids.ndim != 2 or ids.shape[1] > max_len or f["masked_lm_positions"].shape[1] > max_pred:
                raise DataError(f"{path}: arrays of shape {ids.shape} / "
                                f"{f['masked_lm_positions'].shape}, beyond max_seq_length "
                                f"{max_len} / max_predictions {max_pred}")
            shard = Shard(np.zeros((len(ids), max_len), np.int32),
                          np.zeros((len(ids), max_len), np.int32),
                          np.zeros((len(ids), max_len), np.int32),
                          np.zeros((len(ids), max_pred), np.int32),
                          np.zeros((len(ids), max_pred), np.int32),
                          f["next_sentence_labels"][:].astype(np.int32).reshape(-1))
            L, P = ids.shape[1], f["masked_lm_positions"].shape[1]
            shard.input_ids[:, :L] = ids
            shard.segment_ids[:, :L] = f["segment_ids"][:]
            shard.input_mask[:, :L] = f["input_mask"][:]
            shard.masked_lm_positions[:, :P] = f["masked_lm_positions"][:]
            shard.masked_lm_ids[:, :P] = f["masked_lm_ids"][:]
            return shard
        # variable length: each row its own tokens and predictions
        return _pack(list(f["input_ids"][:]), list(f["segment_ids"][:]),
                     list(f["masked_lm_positions"][:]), list(f["masked_lm_ids"][:]),
                     f["next_sentence_labels"][:], max_len, max_pred, path)


def _read_tfrecord(path: str, max_len: int, max_pred: int) -> Shard:
    from mlperf_fast.data.tfrecord import decode_example, load_records

    raw, offsets, lengths = load_records(path)
    ids, seg, pos, mlm, nsp = [], [], [], [], []
    for k, (o, n) in enumerate(zip(offsets, lengths)):
        try:
            ex = decode_example(memoryview(raw)[o:o + n])
        except ValueError as e:
            raise DataError(f"{path}: record {k} is not a tf.train.Example ({e})") from e
        missing = [key for key in (*KEYS, "input_mask") if key not in ex]
        if missing:
            raise DataError(f"{path}: record {k} has no {missing}")
        t = int(sum(ex["input_mask"]))
        ids.append(ex["input_ids"][:t])
        seg.append(ex["segment_ids"][:t])
        weights = ex.get("masked_lm_weights", [float(p != 0) for p in ex["masked_lm_positions"]])
        keep = [i for i, w in enumerate(weights) if w != 0]
        pos.append([ex["masked_lm_positions"][i] for i in keep])
        mlm.append([ex["masked_lm_ids"][i] for i in keep])
        nsp.append(ex["next_sentence_labels"][0])
    return _pack(ids, seg, pos, mlm, nsp, max_len, max_pred, path)


def read_shard(path: str, max_seq_length: int, max_predictions: int,
               vocab_size: int | None = None) -> Shard:
    """One shard of any layout, checked (token ids within the vocabulary, positions within
    their sequences); DataError names the file and what is wrong."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        shard = _read_hdf5(path, max_seq_length, max_predictions)
    else:
        shard = _read_tfrecord(path, max_seq_length, max_predictions)
    return _check(shard, path, vocab_size)


def shard_paths(data_dir: str, split: str) -> list[str]:
    """The shards of ``data_dir/split`` (``train`` or ``eval``), sorted."""
    folder = os.path.join(data_dir, split)
    if not os.path.isdir(folder):
        raise DataError(f"{data_dir}: no {split}/ folder (expected {split}/ and eval/ folders of "
                        "hdf5 or TFRecord shards)")
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                   if os.path.isfile(p) and not os.path.basename(p).startswith("."))
    if not paths:
        raise DataError(f"{folder}: no shards")
    return paths


def check_dataset(data_dir: str) -> None:
    """DataError unless ``data_dir`` has train/ and eval/ shards and a vocab.txt."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: is not a folder")
    for split in ("train", "eval"):
        shard_paths(data_dir, split)
    if not os.path.isfile(os.path.join(data_dir, "vocab.txt")):
        raise DataError(f"{data_dir}: no vocab.txt (the WordPiece vocabulary of the shards)")


def concat(shards: Sequence[Shard]) -> Shard:
    return Shard(*(np.concatenate([getattr(s, f.name) for s in shards])
                   for f in dataclasses.fields(Shard)))
