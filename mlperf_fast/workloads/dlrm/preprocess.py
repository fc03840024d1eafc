"""Criteo's raw TSV days -> the reference's binary format, streaming.

``python3 -m mlperf_fast.workloads.dlrm.preprocess --out DIR day_0 day_1 ... day_23``

Input: one file per day, each line ``label \\t I1..I13 \\t C1..C26`` (decimal integers, 8-digit
hex strings; any field may be empty). Output in ``DIR``, as the reference writes it
(facebookresearch/dlrm, branch mlperf: ``data_utils.getCriteoAdData``,
``processCriteoAdData``, ``data_loader_terabyte.numpy_to_binary``):

- ``<prefix>_train.bin``: every day but the last, in order; ``<prefix>_test.bin``: the first
  ``ceil(n / 2)`` rows of the last day; ``<prefix>_val.bin``: the rest. Each row is 40 int32
  (little-endian): label, 13 dense features, 26 categorical ids.
- ``day_fea_count.npz``: ``counts``, the rows of each of the 26 tables (int32).

The reference's rules: an empty field is 0; a categorical value is ``int(hex, 16) %
max_ind_range``, then renumbered per feature in the order of first appearance over all days
(the last one included), so table ``j`` has ``counts[j]`` rows; negative dense values become 0.

Two passes over the days, each parsing them in chunks (vectorised, no per-field Python): the
first builds the per-feature renumbering (FirstSeen), the second writes the rows. Memory does not grow with
the number of rows, so the 4.2e9 rows of Criteo 1TB stream through as the embedded days do.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.dlrm.config import NUM_DENSE, NUM_SPARSE, ROW_INTS

FIELDS = 1 + NUM_DENSE + NUM_SPARSE
PREFIX = "terabyte_processed"
COUNTS_FILE = "day_fea_count.npz"
_TAB, _NL = 9, 10
_MAX_DEC = 11  # "-2147483648"
_MAX_HEX = 16
_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def _blocks(path: str, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Whole lines of ``path``, about ``block_bytes`` at a time, with the number of the first
    line (from 1). A last line without its newline gets one."""
    line = 1
    rest = b""
    with _open_day(path) as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut], line
            line += data.count(b"\n", 0, cut)
    if rest:
        yield rest + b"\n", line


def _open_day(path: str):
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e})") from e


def _field_chars(a: np.ndarray, starts: np.ndarray, lens: np.ndarray, width: int):
    """For k in range(width): the k-th character of each field and whether it exists."""
    last = a.size - 1
    for k in range(width):
        yield k, a[np.minimum(starts + k, last)], k < lens


def _bad_line(path: str, first_line: int, rows: np.ndarray, why: str) -> DataError:
    return DataError(f"{path}, line {first_line + int(rows[0])}: {why}")


def parse_block(buf: bytes, max_ind_range: int, path: str = "<input>",
                first_line: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse whole lines of Criteo TSV.

    Returns ``labels`` int32 [N], ``dense`` int32 [N, 13] (empty fields 0, negatives kept: the
    caller clips, as the reference does after parsing), ``cats`` int64 [N, 26]
    (``int(hex, 16) % max_ind_range``, empty fields 0). Raises DataError naming the file and
    line of a malformed one.
    """
    a = np.frombuffer(buf, dtype=np.uint8)
    if a.size == 0:
        z = np.zeros(0, np.int32)
        return z, np.zeros((0, NUM_DENSE), np.int32), np.zeros((0, NUM_SPARSE), np.int64)
    is_sep = (a == _TAB) | (a == _NL)
    seps = np.flatnonzero(is_sep)
    newline = a[seps] == _NL
    line_of_sep = np.cumsum(newline) - newline  # line index (0-based) of each separator
    n = int(newline.sum())
    per_line = np.bincount(line_of_sep, minlength=n)
    if (per_line != FIELDS).any():
        bad = np.flatnonzero(per_line != FIELDS)
        raise _bad_line(path, first_line, bad,
                        f"{int(per_line[bad[0]])} fields, expected {FIELDS}")
    ends = seps.reshape(n, FIELDS)
    starts = np.empty_like(ends)
    starts[0, 0] = 0
    starts[1:, 0] = ends[:-1, -1] + 1
    starts[:, 1:] = ends[:, :-1] + 1
    lens = ends - starts
    # a Windows line end leaves "\r" in the last field: not part of it
    cr = (lens[:, -1] > 0) & (a[np.maximum(ends[:, -1] - 1, 0)] == 13)
    lens[:, -1] -= cr

    ints_s, ints_l = starts[:, :1 + NUM_DENSE], lens[:, :1 + NUM_DENSE]
    if (ints_l > _MAX_DEC).any():
        raise _bad_line(path, first_line, np.flatnonzero((ints_l > _MAX_DEC).any(1)),
                        "an integer field is too long")
    neg = (ints_l > 0) & (a[np.minimum(ints_s, a.size - 1)] == ord("-"))
    value = np.zeros(ints_s.shape, dtype=np.int64)
    bad = np.zeros(ints_s.shape, dtype=bool)
    for k, ch, present in _field_chars(a, ints_s, ints_l, int(ints_l.max(initial=0))):
        digit = present & ~(neg & (k == 0))
        d = ch.astype(np.int64) - ord("0")
        bad |= digit & ((d < 0) | (d > 9))
        value = np.where(digit, value * 10 + d, value)
    bad |= neg & (ints_l == 1)
    value = np.where(neg, -value, value)
    bad |= (value > np.iinfo(np.int32).max) | (value < np.iinfo(np.int32).min)
    if bad.any():
        raise _bad_line(path, first_line, np.flatnonzero(bad.any(1)),
                        "a label or dense field is not a 32-bit decimal integer")

    cat_s, cat_l = starts[:, 1 + NUM_DENSE:], lens[:, 1 + NUM_DENSE:]
    if (cat_l > _MAX_HEX).any():
        raise _bad_line(path, first_line, np.flatnonzero((cat_l > _MAX_HEX).any(1)),
                        "a categorical field is longer than 16 hex digits")
    h = np.zeros(cat_s.shape, dtype=np.uint64)
    bad = np.zeros(cat_s.shape, dtype=bool)
    for _, ch, present in _field_chars(a, cat_s, cat_l, int(cat_l.max(initial=0))):
        nib = _HEX[ch]
        bad |= present & (nib == 255)
        h = np.where(present, (h << np.uint64(4)) | nib.astype(np.uint64), h)
    if bad.any():
        raise _bad_line(path, first_line, np.flatnonzero(bad.any(1)),
                        "a categorical field is not hexadecimal")
    cats = (h % np.uint64(max_ind_range)).astype(np.int64)
    return value[:, 0].astype(np.int32), value[:, 1:].astype(np.int32), cats


def parse_file(path: str, max_ind_range: int, block_bytes: int = 4 << 20):
    """``parse_block`` over the whole lines of ``path``, a block at a time."""
    for buf, line in _blocks(path, block_bytes):
        yield parse_block(buf, max_ind_range, path, line)


class FirstSeen:
    """The reference's per-feature renumbering: the i-th distinct value to appear becomes id i.

    Values seen so far are kept sorted with their ids (looked up by binary search) while they
    are few; past ``max_ind_range / 64`` of them (Criteo's 40M-row features), a direct table of
    ``max_ind_range`` int32 (id + 1, 0: not seen) takes over, which costs 160 MB per feature but
    no search and no re-sorting as new values keep arriving."""

    def __init__(self, max_ind_range: int) -> None:
        self.max_ind_range = max_ind_range
        self.keys = np.zeros(0, dtype=np.int64)
        self.key_ids = np.zeros(0, dtype=np.int32)
        self.table: np.ndarray | None = None
        self.count = 0

    def _lookup(self, values: np.ndarray) -> np.ndarray:
        """id + 1 of each value, 0 where not seen."""
        if self.table is not None:
            return self.table[values]
        if self.keys.size == 0:
            return np.zeros(values.shape, dtype=np.int32)
        pos = np.minimum(np.searchsorted(self.keys, values), self.keys.size - 1)
        return np.where(self.keys[pos] == values, self.key_ids[pos] + 1, 0).astype(np.int32)

    def add(self, values: np.ndarray) -> None:
        fresh = values[self._lookup(values) == 0]
        if fresh.size == 0:
            return
        uniq, first = np.unique(fresh, return_index=True)
        in_order = uniq[np.argsort(first, kind="stable")]
        ids = np.arange(self.count, self.count + in_order.size, dtype=np.int32)
        self.count += in_order.size
        if self.table is None and self.count > self.max_ind_range // 64:
            self.table = np.zeros(self.max_ind_range, dtype=np.int32)
            self.table[self.keys] = self.key_ids + 1
            self.keys = self.key_ids = None
        if self.table is not None:
            self.table[in_order] = ids + 1
            return
        keys = np.concatenate([self.keys, in_order])
        order = np.argsort(keys, kind="stable")
        self.keys, self.key_ids = keys[order], np.concatenate([self.key_ids, ids])[order]

    def ids(self, values: np.ndarray) -> np.ndarray:
        ids = self._lookup(values) - 1
        if (ids < 0).any():
            raise DataError("a categorical value was not seen in the first pass (did a day file "
                            "change between the passes?)")
        return ids


def preprocess(days: Sequence[str], out_dir: str, *, max_ind_range: int = 40_000_000,
               prefix: str = PREFIX, block_bytes: int = 4 << 20,
               log: Callable[[str], None] = print) -> dict:
    """Write ``out_dir/<prefix>_{train,test,val}.bin`` and ``day_fea_count.npz`` from the raw
    ``days`` (at least two: the last is split into test and val). Returns
    ``{"counts": [...26], "train_samples": n, "test_samples": n, "val_samples": n}``."""
    if len(days) < 2:
        raise ValueError(f"days: need at least two day files (the last is test/val), got "
                         f"{len(days)}")
    if not 0 < max_ind_range < 2 ** 31:
        raise ValueError(f"max_ind_range must be in [1, 2**31), got {max_ind_range}")
    for d in days:
        if not os.path.isfile(d):
            raise DataError(f"{d} is missing")
    os.makedirs(out_dir, exist_ok=True)
    vocab = [FirstSeen(max_ind_range) for _ in range(NUM_SPARSE)]
    rows = []
    for i, path in enumerate(days):
        n = 0
        for _, _, cats in parse_file(path, max_ind_range, block_bytes):
            for j in range(NUM_SPARSE):
                vocab[j].add(cats[:, j])
            n += cats.shape[0]
        rows.append(n)
        log(f"preprocess: pass 1, {path}: {n} rows")
    test_rows = math.ceil(rows[-1] / 2)  # numpy_to_binary's midpoint
    names = {s: os.path.join(out_dir, f"{prefix}_{s}.bin") for s in ("train", "test", "val")}
    with contextlib.ExitStack() as stack:
        outs = {s: stack.enter_context(open(p, "wb")) for s, p in names.items()}
        for i, path in enumerate(days):
            written = 0
            for labels, dense, cats in parse_file(path, max_ind_range, block_bytes):
                block = np.empty((labels.size, ROW_INTS), dtype="<i4")
                block[:, 0] = labels
                block[:, 1:1 + NUM_DENSE] = np.maximum(dense, 0)
                for j in range(NUM_SPARSE):
                    block[:, 1 + NUM_DENSE + j] = vocab[j].ids(cats[:, j])
                if i < len(days) - 1:
                    outs["train"].write(block.tobytes())
                else:
                    cut = min(max(test_rows - written, 0), block.shape[0])
                    outs["test"].write(block[:cut].tobytes())
                    outs["val"].write(block[cut:].tobytes())
                written += block.shape[0]
            log(f"preprocess: pass 2, {path}: {written} rows written")
    counts = np.array([v.count for v in vocab], dtype=np.int32)
    np.savez(os.path.join(out_dir, COUNTS_FILE), counts=counts)
    return {"counts": counts.tolist(), "train_samples": int(sum(rows[:-1])),
            "test_samples": int(test_rows), "val_samples": int(rows[-1] - test_rows)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m mlperf_fast.workloads.dlrm.preprocess",
                                description="Criteo TSV days -> the DLRM reference's binary "
                                "format (the last day becomes test and val).")
    p.add_argument("days", nargs="+", help="day files in order (day_0 ... day_23)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-ind-range", type=int, default=40_000_000)
    p.add_argument("--prefix", default=PREFIX)
    args = p.parse_args(argv)
    try:
        result = preprocess(args.days, args.out, max_ind_range=args.max_ind_range,
                            prefix=args.prefix,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
