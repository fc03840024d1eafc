"""Input pipelines: the PyTorch path's batches, and the DALI path against it on the GPU."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mlperf_fast.workloads.rnnt import data
from mlperf_fast.workloads.rnnt.config import EMBEDDED, EmbeddedCorpus
from mlperf_fast.data.dali import dali_available
from mlperf_fast.data.tokenizers import train_sentencepiece
from mlperf_fast.workloads.rnnt.pipeline import TorchPipeline, eval_batches, pad_labels

CORPUS = EmbeddedCorpus(train_utterances=10, eval_utterances=6, train_voices=3, eval_voices=2,
                        seed=21)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLPERF_FAST_CACHE", str(cache))
    root = data.embedded_corpus(CORPUS, "train-synth", "dev-synth", log=lambda m: None)
    samples = data.read_split(root, "train-synth") + data.read_split(root, "dev-synth")
    tok = data.Tokenizer(train_sentencepiece([s.transcript for s in samples], 40,
                                             str(cache / "m")))
    yield samples, tok
    mp.undo()


def test_pad_labels():
    y, lens = pad_labels([[3, 4], [5], []])
    assert y.tolist() == [[3, 4], [5, 0], [0, 0]] and lens.tolist() == [2, 1, 0]
    assert y.dtype == torch.int32


def test_eval_batches_shard():
    assert eval_batches(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert eval_batches(7, 3, rank=1, world_size=2) == [[1, 3, 5]]


def test_torch_pipeline_batches(corpus):
    samples, tok = corpus
    cfg = EMBEDDED.features
    ev = TorchPipeline(samples, tok, cfg, None, train=False, seed=1)
    feats, lens, y, y_lens = ev.batch([0, 3, 5])
    assert feats.shape[:2] == (3, 80) and feats.shape[2] == int(lens.max())
    assert y.shape[0] == 3 and y_lens.tolist() == [len(tok.tokenize(samples[i].transcript))
                                                   for i in (0, 3, 5)]
    again = ev.batch([0, 3, 5])
    assert torch.equal(again[0], feats)  # evaluation features are computed once
    tr = TorchPipeline(samples, tok, cfg, EMBEDDED.augment, train=True, seed=1)
    a = tr.batch([0, 1])
    tr2 = TorchPipeline(samples, tok, cfg, EMBEDDED.augment, train=True, seed=1)
    b = tr2.batch([0, 1])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # deterministic in the seed
    c = tr.batch([0, 1])
    assert not torch.equal(a[1], c[1]) or not torch.equal(a[0], c[0])  # fresh perturbation


@pytest.mark.cuda
@pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed")
@pytest.mark.parametrize("trim", [False, True])
def test_dali_agrees_with_torch(corpus, trim):
    from mlperf_fast.workloads.rnnt.pipeline import DaliPipeline

    samples, tok = corpus
    cfg = dataclasses.replace(EMBEDDED.features, dither=0.0,
                              trim_silence_db=-60.0 if trim else None)
    idx = list(range(len(samples)))
    ours = TorchPipeline(samples, tok, cfg, None, train=False, seed=1)
    dali = DaliPipeline(samples, tok, cfg, None, train=False, seed=1, device_id=0,
                        max_batch=len(idx))
    f_t, l_t, y_t, yl_t = ours.batch(idx)
    f_d, l_d, y_d, yl_d = dali.batch(idx)
    assert torch.equal(y_t, y_d) and torch.equal(yl_t, yl_d)
    if not trim:
        # the same frames: centered windows, N // hop + 1 of them
        assert l_d.tolist() == l_t.tolist()
        t = int(l_t.max())
        diff = (f_d[:, :, :t].cpu() - f_t[:, :, :t]).abs()
        # standardized log-mels: float32 FFTs and DALI's own mel-filter rounding differ by
        # ~1e-3; tail bins of near-silent frames (log of tiny powers) differ most
        assert float(diff.mean()) < 0.02, float(diff.mean())
        assert float(torch.quantile(diff.flatten(), 0.99)) < 0.2
    else:
        # DALI's nonsilent-region bounds may differ from ours by up to one power window
        # (2048 samples = 12.8 frames)
        assert np.abs(l_d.numpy() - l_t.numpy()).max() <= 13


def test_seeded_training_batches_do_not_depend_on_the_worker(corpus):
    from mlperf_fast.data.loader import load_ahead

    samples, tok = corpus
    pipe = TorchPipeline(samples, tok, EMBEDDED.features, EMBEDDED.augment, train=True, seed=1,
                         cache_audio=True)
    pipe.preload()
    keys = [([0, 1, 2], 11), ([3, 4], 12), ([0, 1, 2], 11)]
    here = [pipe.keyed_batch(k) for k in keys]
    there = list(load_ahead(pipe.keyed_batch, keys, workers=2))
    for a, b in zip(here, there):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert torch.equal(here[0][0], here[2][0])  # the same key, the same draws
    assert not torch.equal(here[0][0], pipe.batch([0, 1, 2], seed=99)[0])
