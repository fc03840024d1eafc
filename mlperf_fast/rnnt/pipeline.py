"""Input pipelines. Both yield, per batch, padded normalized log-mels (B, n_filt, T) with their
frame counts and the padded labels with their lengths; ``features.batch_features`` then applies
SpecAugment and frame splicing on the training device (as the reference does after DALI).

- ``TorchPipeline``: decoding and features on the CPU in PyTorch (features.py). Always available.
- ``DaliPipeline``: decoding on the CPU, features on the GPU with NVIDIA DALI (the reference's
  pipeline, common/data/dali/pipeline.py). Used when DALI is installed and the run is on CUDA.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from mlperf_fast.rnnt import features
from mlperf_fast.rnnt.config import AugmentConfig, FeatureConfig
from mlperf_fast.rnnt.data import Sample, Tokenizer, load_audio

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def pad_labels(labels: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, U_max) int32 padded with 0 (sentencepiece's <unk>, never a target), lengths (B,)."""
    lens = torch.tensor([len(x) for x in labels], dtype=torch.int32)
    out = torch.zeros((len(labels), max(1, int(lens.max()) if len(labels) else 1)),
                      dtype=torch.int32)
    for i, x in enumerate(labels):
        out[i, :len(x)] = torch.tensor(x, dtype=torch.int32)
    return out, lens


class TorchPipeline:
    """Features of ``samples`` in PyTorch. ``train``: speed perturbation (uniform rate in
    [speed_min, speed_max] with probability speed_p) and fresh dither every epoch; otherwise
    the features are computed once and kept (the evaluation set). ``cache_audio`` keeps the
    decoded audio in memory (16-bit) between epochs."""

    def __init__(self, samples: list[Sample], tokenizer: Tokenizer, cfg: FeatureConfig,
                 augment: AugmentConfig | None, train: bool, seed: int,
                 cache_audio: bool = False) -> None:
        self.samples, self.cfg, self.augment, self.train = samples, cfg, augment, train
        self.labels = [tokenizer.tokenize(s.transcript) for s in samples]
        self.seed = seed
        self.cache_audio = cache_audio
        self._audio: dict[int, np.ndarray] = {}
        self._feats: dict[int, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)

    def _load(self, i: int) -> torch.Tensor:
        if i in self._audio:
            return torch.from_numpy(self._audio[i].astype(np.float32) / 32768.0)
        audio, rate = load_audio(self.samples[i].path)
        x = torch.from_numpy(audio)
        if rate != self.cfg.sample_rate:
            x = features.resample(x, rate, self.cfg.sample_rate)
        if self.cache_audio:
            self._audio[i] = np.clip(np.round(x.numpy() * 32768.0), -32768, 32767).astype(np.int16)
        return x

    def utterance(self, i: int) -> torch.Tensor:
        """Normalized log-mels (n_filt, frames) of utterance ``i``."""
        if not self.train and i in self._feats:
            return self._feats[i]
        x = self._load(i)
        a = self.augment
        if self.train and a is not None and a.speed_p > 0 and self.np_rng.random() < a.speed_p:
            x = features.speed_perturb(x, float(self.np_rng.uniform(a.speed_min, a.speed_max)),
                                       self.cfg.sample_rate)
        if self.cfg.trim_silence_db is not None:
            x = features.trim_silence(x, self.cfg.trim_silence_db)
        f = features.log_mel(x, self.cfg, self.generator)
        if not self.train:
            self._feats[i] = f
        return f

    def batch(self, indices: list[int]) -> Batch:
        feats, lens = features.pad_batch([self.utterance(i) for i in indices])
        y, y_lens = pad_labels([self.labels[i] for i in indices])
        return feats, lens, y, y_lens

    def batches(self, index_batches: list[list[int]]) -> Iterator[Batch]:
        for b in index_batches:
            yield self.batch(b)


def eval_batches(n: int, batch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's share of the evaluation set in batches of at most ``batch``."""
    mine = list(range(rank, n, world_size))
    return [mine[i:i + batch] for i in range(0, len(mine), batch)]


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def steps(n: int, batch: int) -> int:
    return math.ceil(n / batch)
