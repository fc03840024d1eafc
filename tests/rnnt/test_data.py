"""The LibriSpeech reader, the manifests, the tokenizer, the bucketing sampler, WER, and the
embedded corpus's cache (generated, verified, rebuilt when damaged)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from mlperf_fast.harness.workload import DataError
from mlperf_fast.data.cache import verify
from mlperf_fast.data.samplers import BucketingSampler
from mlperf_fast.data.tokenizers import train_sentencepiece
from mlperf_fast.workloads.rnnt import data, synth
from mlperf_fast.workloads.rnnt.config import EmbeddedCorpus


def _write_librispeech(root: str, split: str = "dev-clean") -> None:
    ch = os.path.join(root, split, "84", "121123")
    os.makedirs(ch)
    lines = []
    for i, text in enumerate(["GO DO YOU HEAR", "BUT IN LESS THAN FIVE MINUTES"]):
        utt = f"84-121123-{i:04d}"
        sf.write(os.path.join(ch, utt + ".flac"), np.zeros(16000 * (i + 1), np.int16), 16000)
        lines.append(f"{utt} {text}\n")
    with open(os.path.join(ch, "84-121123.trans.txt"), "w") as f:
        f.writelines(lines)


def test_reads_librispeech_layout(tmp_path):
    _write_librispeech(str(tmp_path))
    samples = data.read_split(str(tmp_path), "dev-clean")
    assert [s.transcript for s in samples] == ["go do you hear", "but in less than five minutes"]
    assert [round(s.duration, 3) for s in samples] == [1.0, 2.0]
    assert samples[0].path.endswith("84-121123-0000.flac")


def test_reader_names_missing_and_corrupt_files(tmp_path):
    _write_librispeech(str(tmp_path))
    audio = tmp_path / "dev-clean" / "84" / "121123" / "84-121123-0001.flac"
    audio.write_bytes(b"not flac")
    with pytest.raises(DataError, match="84-121123-0001.flac"):
        data.read_split(str(tmp_path), "dev-clean")
    audio.unlink()
    with pytest.raises(DataError, match="84-121123-0001.flac is missing"):
        data.read_split(str(tmp_path), "dev-clean")
    with pytest.raises(DataError, match="train-clean-100"):
        data.check_split(str(tmp_path), "train-clean-100")


def test_reads_reference_manifest(tmp_path):
    entries = [{"transcript": "hello world", "original_duration": 1.5,
                "files": [{"fname": "dev-clean-wav/1-2-0000.wav", "channels": 1}]}]
    with open(tmp_path / "librispeech-dev-clean-wav.json", "w") as f:
        json.dump(entries, f)
    (s,) = data.read_split(str(tmp_path), "dev-clean")
    assert s.transcript == "hello world" and s.duration == 1.5
    assert s.path == os.path.join(str(tmp_path), "dev-clean-wav/1-2-0000.wav")
    with open(tmp_path / "librispeech-dev-clean-wav.json", "w") as f:
        f.write("[{\"transcript\": 1")
    with pytest.raises(DataError, match="librispeech-dev-clean-wav.json"):
        data.read_split(str(tmp_path), "dev-clean")


def test_normalize_transcript():
    assert data.normalize_transcript("  IT'S  A Dog!\n") == "it's a dog"


def test_tokenizer_round_trip(tmp_path):
    texts = synth.sentences(300, __import__("random").Random(0))
    model = train_sentencepiece(texts, 64, str(tmp_path / "m"))
    tok = data.Tokenizer(model)
    assert tok.num_labels == 64 and tok.blank == 64
    for t in texts[:20]:
        ids = tok.tokenize(t)
        assert 0 not in ids and tok.detokenize(ids) == t


def test_bucketing_sampler():
    durations = list(np.random.default_rng(0).uniform(1, 10, size=103))
    s = BucketingSampler(durations, global_batch=8, num_buckets=4, seed=3)
    e0, e1 = s.epoch(0), s.epoch(1)
    assert len(e0) == len(s) == 12 and all(len(b) == 8 for b in e0)
    flat = [i for b in e0 for i in b]
    assert len(set(flat)) == len(flat) == 96
    assert e0 == s.epoch(0) and e0 != e1
    # batches come from one or two neighbouring buckets: their durations are close
    order = np.argsort(durations)
    rank = {int(i): r for r, i in enumerate(order)}
    spans = [max(rank[i] for i in b) - min(rank[i] for i in b) for b in e0]
    assert np.median(spans) < 103 / 4 + 8
    # two ranks split each global batch
    r0 = BucketingSampler(durations, 8, 4, seed=3, rank=0, world_size=2).epoch(0)
    r1 = BucketingSampler(durations, 8, 4, seed=3, rank=1, world_size=2).epoch(0)
    assert [a + b for a, b in zip(r0, r1)] == e0


def test_embedded_corpus_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPERF_FAST_CACHE", str(tmp_path))
    corpus = EmbeddedCorpus(train_utterances=12, eval_utterances=4, train_voices=3,
                            eval_voices=2, seed=5)
    messages: list[str] = []
    root = data.embedded_corpus(corpus, "train-synth", "dev-synth", log=messages.append)
    assert root.startswith(str(tmp_path)) and verify(root) is None
    train = data.read_split(root, "train-synth")
    dev = data.read_split(root, "dev-synth")
    assert len(train) == 12 and len(dev) == 4
    assert not {s.transcript for s in train} & {s.transcript for s in dev}
    train_spk = {os.path.basename(os.path.dirname(os.path.dirname(s.path))) for s in train}
    dev_spk = {os.path.basename(os.path.dirname(os.path.dirname(s.path))) for s in dev}
    assert not train_spk & dev_spk
    audio, rate = data.load_audio(train[0].path)
    assert rate == 16000 and 0.5 < len(audio) / rate < 5 and np.abs(audio).max() > 0.05
    vocab = synth.vocabulary()
    assert all(w in vocab for s in train + dev for w in s.transcript.split())
    # the cache is reused as is
    mtime = os.path.getmtime(train[0].path)
    messages.clear()
    assert data.embedded_corpus(corpus, "train-synth", "dev-synth", log=messages.append) == root
    assert messages == [] and os.path.getmtime(train[0].path) == mtime
    # a damaged file is detected and the corpus rebuilt, identical
    with open(train[0].path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert "corrupt" in verify(root)
    data.embedded_corpus(corpus, "train-synth", "dev-synth", log=messages.append)
    assert any("damaged" in m for m in messages) and verify(root) is None
    assert [s.transcript for s in data.read_split(root, "train-synth")] == \
        [s.transcript for s in train]
    # an interrupted generation (no manifest) is not taken for a corpus
    os.remove(os.path.join(root, "MANIFEST.json"))
    assert verify(root) is not None
