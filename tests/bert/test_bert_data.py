"""BERT's data: the writer's rules (masking counts and proportions, the pair structure, seeded
determinism), the hdf5 layouts (fixed, variable-length, packed) and TFRecords read back to the
same arrays, damaged shards refused, and the sample stream's order."""
from __future__ import annotations

import collections
import random

import numpy as np
import pytest

from mlperf_fast.harness.workload import DataError
from mlperf_fast.workloads.bert import data, pipeline, writer

WORDS = ["the", "of", "and", "a", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "it", "from", "at", "his", "an", "be", "which", "this", "are", "or", "has", "were", "had", "not", "have", "one", "their", "its", "first", "new", "after", "been", "two", "who", "more", "other", "also", "but", "time", "city", "into", "over", "only", "some", "such", "years"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join([*writer.SPECIAL, *WORDS, ".", ",", "##s", "##ed"]) + "\n")
    return writer.WordPiece(str(path))


def _text(seed: int, docs: int = 12) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(docs):
        for _ in range(rng.randint(1, 8)):
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + ".")
        lines.append("")
    return lines


def test_tokenizer_lowercases_and_splits_punctuation(vocab):
    assert vocab.tokenize("The CITY, Years.") == ["the", "city", ",", "years", "."]
    assert vocab.tokenize("zebra") == ["[UNK]"]
    assert vocab.ids(["[PAD]", "the", "nonsense"]) == [0, 5, 1]


def test_documents_split_at_blank_lines(vocab):
    docs = writer.read_documents(["the city.", "", "", "a time.", "the first one."], vocab)
    assert docs == [[["the", "city", "."]], [["a", "time", "."], ["the", "first", "one", "."]]]


def test_masking_counts_and_proportions(vocab):
    rng = random.Random(0)
    tokens = ["[CLS]", *(["the"] * 40), "[SEP]", *(["city"] * 30), "[SEP]"]
    kinds = collections.Counter()
    for _ in range(400):
        out, pos, labels = writer.mask_tokens(tokens, 0.15, 76, vocab.vocab_words, rng)
        assert len(pos) == round(len(tokens) * 0.15) == 11 and pos == sorted(pos)
        assert all(tokens[p] not in ("[CLS]", "[SEP]") for p in pos)
        assert labels == [tokens[p] for p in pos]
        for p in pos:
            kinds["mask" if out[p] == "[MASK]" else "same" if out[p] == tokens[p] else "other"] += 1
        assert all(out[i] == tokens[i] for i in range(len(tokens)) if i not in pos)
    n = sum(kinds.values())
    # 80/10/10 (a random word can be the same word: 1 in ~60 here); 4400 draws: 3 sigma ~ 1.8%
    assert abs(kinds["mask"] / n - 0.8) < 0.02
    assert abs(kinds["same"] / n - 0.1) < 0.02 and abs(kinds["other"] / n - 0.1) < 0.02
    # at most max_predictions, at least one
    assert len(writer.mask_tokens(tokens, 0.15, 5, vocab.vocab_words, rng)[1]) == 5
    assert len(writer.mask_tokens(["[CLS]", "a", "[SEP]", "b", "[SEP]"], 0.15, 76,
                                  vocab.vocab_words, rng)[1]) == 1


def _instances(vocab, seed=12345, max_len=64, dupe=3):
    docs = writer.read_documents(_text(1), vocab)
    return writer.create_instances(docs, vocab.vocab_words, seed, max_len, dupe, 0.1, 0.15, 10)


def test_instances_have_the_pair_structure_and_are_seeded(vocab):
    a, b = _instances(vocab), _instances(vocab)
    assert [i.tokens for i in a] == [i.tokens for i in b]
    assert [i.tokens for i in _instances(vocab, seed=1)] != [i.tokens for i in a]
    for inst in a:
        t, s = inst.tokens, inst.segment_ids
        assert len(t) <= 64 and len(t) == len(s)
        # (a random replacement may itself be "[SEP]": the separator is found by segment)
        sep = s.index(1) - 1
        assert t[0] == "[CLS]" and t[sep] == "[SEP]" and t[-1] == "[SEP]"
        assert s == [0] * (sep + 1) + [1] * (len(t) - sep - 1)
        assert sep >= 2 and len(t) - sep >= 3  # both segments non-empty
        assert 1 <= len(inst.masked_lm_positions) <= 10
    frac = np.mean([i.is_random_next for i in a])
    assert 0.4 < frac < 0.8  # one-sentence chunks are always random: above one half
    with pytest.raises(ValueError, match="at least 2"):
        writer.create_instances([[["the"]]], vocab.vocab_words)


def test_hdf5_and_tfrecord_round_trip(vocab, tmp_path):
    inst = _instances(vocab)
    arrays = writer.to_arrays(inst, vocab, 64, 10)
    (h5,) = writer.write_shards(arrays, str(tmp_path / "h"), "part", 1, "hdf5")
    (tf,) = writer.write_shards(arrays, str(tmp_path / "t"), "part", 1, "tfrecord")
    a, b = data.read_shard(h5, 64, 10, len(vocab.vocab_words)), data.read_shard(tf, 64, 10)
    for field in ("input_ids", "segment_ids", "input_mask", "masked_lm_positions",
                  "masked_lm_ids", "next_sentence_labels"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
        want = arrays[field].astype(np.int32)
        assert np.array_equal(getattr(a, field), want), field
    batch = a.batch([0, 2])
    assert batch["input_ids"].shape == (2, 64)
    assert batch["masked_lm_weights"].sum() == (arrays["masked_lm_positions"][[0, 2]] != 0).sum()
    # read into a larger layout: padded further with zeros
    wide = data.read_shard(h5, 80, 12)
    assert wide.input_ids.shape == (len(inst), 80) and np.array_equal(wide.input_ids[:, :64],
                                                                        a.input_ids)
    with pytest.raises(DataError, match="beyond max_seq_length"):
        data.read_shard(h5, 32, 10)


def test_variable_length_and_packed_layouts(vocab, tmp_path):
    import h5py

    arrays = writer.to_arrays(_instances(vocab), vocab, 64, 10)
    fixed = data.Shard(*(arrays[k].astype(np.int32) for k in (
        "input_ids", "segment_ids", "input_mask", "masked_lm_positions", "masked_lm_ids",
        "next_sentence_labels")))
    lens = arrays["input_mask"].sum(1)
    plens = (arrays["masked_lm_positions"] != 0).sum(1)
    n = len(lens)
    var = tmp_path / "var.hdf5"
    with h5py.File(var, "w") as f:
        for key, dt, src, ln in (("input_ids", "int16", "input_ids", lens),
                                 ("segment_ids", "int8", "segment_ids", lens),
                                 ("masked_lm_positions", "int16", "masked_lm_positions", plens),
                                 ("masked_lm_ids", "int16", "masked_lm_ids", plens)):
            d = f.create_dataset(key, (n,), dtype=h5py.vlen_dtype(np.dtype(dt)))
            for k in range(n):
                d[k] = arrays[src][k, :ln[k]]
        f.create_dataset("next_sentence_labels", data=arrays["next_sentence_labels"])
    got = data.read_shard(str(var), 64, 10)
    for field in ("input_ids", "segment_ids", "input_mask", "masked_lm_positions",
                  "masked_lm_ids", "next_sentence_labels"):
        assert np.array_equal(getattr(got, field), getattr(fixed, field)), field
    # packed: pairs of sequences back to back, positions offset by the first's length
    packed = tmp_path / "packed.hdf5"
    pairs = [(k, k + 1) for k in range(0, n - 1, 2)]
    with h5py.File(packed, "w") as f:
        def vl(key, dt):
            return f.create_dataset(key, (len(pairs),), dtype=h5py.vlen_dtype(np.dtype(dt)))
        ids, seg, pos, mlm = vl("input_ids", "int16"), vl("segment_ids", "int8"), \
            vl("masked_lm_positions", "int16"), vl("masked_lm_ids", "int16")
        nsp, pl, pml = vl("next_sentence_labels", "int8"), vl("packed_input_len", "int16"), \
            vl("packed_masked_lm_len", "int16")
        for r, (i, j) in enumerate(pairs):
            ids[r] = np.concatenate([arrays["input_ids"][i, :lens[i]],
                                     arrays["input_ids"][j, :lens[j]]])
            seg[r] = np.concatenate([arrays["segment_ids"][i, :lens[i]],
                                     arrays["segment_ids"][j, :lens[j]]])
            pos[r] = np.concatenate([arrays["masked_lm_positions"][i, :plens[i]],
                                     arrays["masked_lm_positions"][j, :plens[j]] + lens[i]])
            mlm[r] = np.concatenate([arrays["masked_lm_ids"][i, :plens[i]],
                                     arrays["masked_lm_ids"][j, :plens[j]]])
            nsp[r] = arrays["next_sentence_labels"][[i, j]]
            pl[r], pml[r] = [lens[i], lens[j]], [plens[i], plens[j]]
    got = data.read_shard(str(packed), 64, 10)
    rows = [k for pair in pairs for k in pair]
    for field in ("input_ids", "masked_lm_positions", "masked_lm_ids", "next_sentence_labels"):
        assert np.array_equal(getattr(got, field), getattr(fixed, field)[rows]), field


def test_damaged_or_foreign_shards_are_refused(vocab, tmp_path):
    arrays = writer.to_arrays(_instances(vocab), vocab, 64, 10)
    (h5,) = writer.write_shards(arrays, str(tmp_path), "part", 1, "hdf5")
    with pytest.raises(DataError, match="outside the vocabulary"):
        data.read_shard(h5, 64, 10, vocab_size=10)
    (tf,) = writer.write_shards(arrays, str(tmp_path / "t"), "part", 1, "tfrecord")
    with open(tf, "rb") as f:
        raw = bytearray(f.read())
    raw[40] ^= 0xFF
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="bad.tfrecord"):
        data.read_shard(str(bad), 64, 10)
    with pytest.raises(DataError, match="no such file"):
        data.read_shard(str(tmp_path / "none.hdf5"), 64, 10)
    with pytest.raises(DataError, match="no train/"):
        data.check_dataset(str(tmp_path))
    import h5py

    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(DataError, match="no \\["):
        data.read_shard(str(other), 64, 10)


def test_sample_stream_covers_each_epoch_and_resumes_anywhere():
    s = pipeline.SampleStream([5, 0, 7, 3], seed=4)
    first = s.rows(0, 15)
    assert sorted(map(tuple, first)) == sorted(
        [(0, r) for r in range(5)] + [(2, r) for r in range(7)] + [(3, r) for r in range(3)])
    both = s.rows(0, 40)
    assert np.array_equal(np.concatenate([s.rows(0, 13), s.rows(13, 27)]), both)
    assert not np.array_equal(both[:15], both[15:30])  # another order in epoch 2
    with pytest.raises(ValueError):
        pipeline.SampleStream([0, 0], seed=1)


def test_writer_command(vocab, tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("\n".join(_text(3)) + "\n")
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab.vocab_words) + "\n")
    rc = writer.main([str(text), "--vocab", str(vocab_file), "--out", str(tmp_path / "o"),
                      "--max-seq-length", "64", "--max-predictions", "10", "--dupe-factor", "2",
                      "--shards", "2"])
    assert rc == 0
    assert len(list((tmp_path / "o").glob("part_*.hdf5"))) == 2
    assert writer.main([str(text), "--vocab", str(tmp_path / "none.txt"), "--out",
                        str(tmp_path / "o2")]) == 2
