"""The TSV -> binary preprocessing against a line-by-line oracle of the reference's rules
(data_utils.getCriteoAdData / processCriteoAdData / numpy_to_binary), the binary reader, the
generator's data read back through both, and the errors on bad input."""
import math
import os

import numpy as np
import pytest
import torch

from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.dlrm import preprocess as pp
from mlperf_fast.workloads.dlrm import synth
from mlperf_fast.workloads.dlrm.data import CriteoBinary, check_dataset, read_counts, split_path


def oracle(day_files, cap):
    """The reference's rules, one line at a time, in plain Python."""
    rows_per_day, seen = [], [{} for _ in range(26)]
    parsed = []
    for path in day_files:
        n = 0
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n").split("\t")
                line = ["0" if v == "" else v for v in line]
                y = int(line[0])
                dense = [max(int(v), 0) for v in line[1:14]]
                cats = [int(v, 16) % cap for v in line[14:]]
                for j, c in enumerate(cats):
                    seen[j].setdefault(c, len(seen[j]))
                parsed.append([y] + dense + cats)
                n += 1
        rows_per_day.append(n)
    out = np.array([r[:14] + [seen[j][c] for j, c in enumerate(r[14:])] for r in parsed],
                   dtype=np.int32).reshape(-1, 40)
    n_train = sum(rows_per_day[:-1])
    mid = n_train + math.ceil(rows_per_day[-1] / 2)
    return out[:n_train], out[n_train:mid], out[mid:], [len(s) for s in seen]


def _random_day(path, n, rng, hexlen=8):
    lines = []
    for _ in range(n):
        f = [str(int(rng.integers(0, 2)))]
        f += ["" if rng.random() < 0.1 else str(int(rng.integers(-5, 3000))) for _ in range(13)]
        f += ["" if rng.random() < 0.1 else
              format(int(rng.integers(0, 40)) * 0x9E3779B1 % (1 << 32), f"0{hexlen}x")
              for _ in range(26)]
        lines.append("\t".join(f))
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


@pytest.mark.parametrize("cap,block", [(40_000_000, 1 << 20), (37, 300)])
def test_preprocess_matches_oracle(tmp_path, cap, block):
    rng = np.random.default_rng(0)
    days = []
    for d, n in enumerate([50, 1, 31]):  # a one-row day; an odd last day (test gets the extra)
        days.append(str(tmp_path / f"day_{d}"))
        _random_day(days[-1], n, rng)
    out = tmp_path / "out"
    result = pp.preprocess(days, str(out), max_ind_range=cap, block_bytes=block,
                           log=lambda m: None)
    train, test, val, counts = oracle(days, cap)
    assert result["counts"] == counts == list(read_counts(str(out)))
    assert (result["train_samples"], result["test_samples"], result["val_samples"]) == (51, 16, 15)
    for split, want in (("train", train), ("test", test), ("val", val)):
        got = np.fromfile(out / f"terabyte_processed_{split}.bin", dtype="<i4").reshape(-1, 40)
        np.testing.assert_array_equal(got, want, err_msg=split)


def test_parse_block_fields():
    line = b"1\t-3\t\t7\t0\t1\t2\t3\t4\t5\t6\t7\t8\t2147483647\t" + \
        b"\t".join([b"ffffffff", b"", b"A0"] + [b"1"] * 23) + b"\r\n"
    y, dense, cats = pp.parse_block(line, 1000)
    assert y.tolist() == [1]
    assert dense[0].tolist() == [-3, 0, 7, 0, 1, 2, 3, 4, 5, 6, 7, 8, 2147483647]
    assert cats[0, :3].tolist() == [0xffffffff % 1000, 0, 0xa0]


@pytest.mark.parametrize("bad,match", [
    (b"1\t2\n", "2 fields"),
    (b"1\t" + b"x\t" * 13 + b"\t".join([b"0"] * 26) + b"\n", "decimal"),
    (b"1\t" + b"1\t" * 13 + b"\t".join([b"zz"] + [b"0"] * 25) + b"\n", "hexadecimal"),
    (b"1\t" + b"99999999999\t" + b"1\t" * 12 + b"\t".join([b"0"] * 26) + b"\n", "32-bit"),
])
def test_parse_errors_name_the_line(bad, match):
    good = b"0\t" + b"1\t" * 13 + b"\t".join([b"0"] * 26) + b"\n"
    with pytest.raises(DataError, match=f"day_x, line 2: .*{match}"):
        pp.parse_block(good + bad, 100, "day_x", 1)


def test_preprocess_arguments(tmp_path):
    with pytest.raises(ValueError, match="two day files"):
        pp.preprocess([str(tmp_path / "a")], str(tmp_path))
    with pytest.raises(DataError, match="missing"):
        pp.preprocess([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path))
    assert pp.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path)]) == 2


def test_synth_roundtrip_and_reader(tmp_path):
    s = synth.SynthSettings(days=2, rows_per_day=3001, vocab=(50,) * 13 + (3,) * 13, seed=5)
    synth.build_dataset(s, str(tmp_path), log=lambda m: None)
    meta = synth.read_meta(str(tmp_path))
    assert 0.5 < meta["bayes_auc"] < 1 and 0.5 < meta["bayes_auc_expected"] < 1
    assert meta["train_samples"] == 3001 and meta["test_samples"] == 1501
    check_dataset(str(tmp_path))
    counts = read_counts(str(tmp_path))
    assert all(c <= v + 1 for c, v in zip(counts, s.vocab))  # the vocab, and "missing"
    data = CriteoBinary(split_path(str(tmp_path), "train"), 1000, counts)
    assert (data.num_samples, data.num_batches) == (3001, 4)
    raw = np.fromfile(split_path(str(tmp_path), "train"), dtype="<i4").reshape(-1, 40)
    last = data.batch(3)
    assert len(last) == 1  # the short last batch, as the reference's ceil
    b = data.batch(1)
    torch.testing.assert_close(b.dense, torch.log(torch.from_numpy(
        raw[1000:2000, 1:14].astype(np.float32)) + 1))
    assert torch.equal(b.sparse, torch.from_numpy(raw[1000:2000, 14:].astype(np.int64)))
    assert torch.equal(b.labels, torch.from_numpy(raw[1000:2000, 0].astype(np.float32)))
    assert (b.dense >= 0).all()


def test_expected_auc_matches_sampling():
    rng = np.random.default_rng(0)
    p = rng.beta(1, 3, 4000)
    p[:500] = 0.25  # ties
    from mlperf_fast.metrics.auc import roc_auc
    draws = [roc_auc(torch.from_numpy(p), torch.from_numpy((rng.random(p.size) < p).astype(int)))
             for _ in range(200)]
    assert synth.expected_auc(p) == pytest.approx(np.mean(draws), abs=2e-3)


def test_reader_errors(tmp_path):
    d = str(tmp_path)
    with pytest.raises(DataError, match="day_fea_count.npz is missing"):
        check_dataset(d)
    np.savez(os.path.join(d, "day_fea_count.npz"), counts=np.full(26, 5, np.int32))
    with pytest.raises(DataError, match="no \\*_train.bin"):
        check_dataset(d)
    (tmp_path / "x_train.bin").write_bytes(b"\0" * 161)
    with pytest.raises(DataError, match="whole number"):
        check_dataset(d)
    row = np.zeros(40, "<i4")
    row[20] = 5  # id 5 in a table of 5 rows
    (tmp_path / "x_train.bin").write_bytes(row.tobytes())
    (tmp_path / "x_test.bin").write_bytes(np.zeros(40, "<i4").tobytes())
    check_dataset(d)
    with pytest.raises(DataError, match="outside"):
        CriteoBinary(str(tmp_path / "x_train.bin"), 4, (5,) * 26).batch(0)
    np.savez(os.path.join(d, "day_fea_count.npz"), counts=np.full(3, 5, np.int32))
    with pytest.raises(DataError, match="26 positive"):
        read_counts(d)
