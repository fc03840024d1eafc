"""Input pipelines. Both yield, per batch, padded normalized log-mels (B, n_filt, T) with their
frame counts and the padded labels with their lengths; ``features.batch_features`` then applies
SpecAugment and frame splicing on the training device (as the reference does after DALI).

- ``TorchPipeline``: decoding and features on the CPU in PyTorch (features.py). Always available.
- ``DaliPipeline``: decoding on the CPU, features on the GPU with NVIDIA DALI (the reference's
  pipeline, common/data/dali/pipeline.py). Used when DALI is installed and the run is on CUDA.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mlperf_fast.workloads.rnnt import features
from mlperf_fast.workloads.rnnt.config import AugmentConfig, FeatureConfig
from mlperf_fast.workloads.rnnt.data import Sample, Tokenizer, load_audio

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

    def preload(self) -> None:
        """Decode every utterance into the audio cache now (``cache_audio``): worker processes
        forked afterwards share it instead of each decoding the files again."""
        if self.cache_audio:
            for i in range(len(self.samples)):
                self._load(i)

    def batch(self, indices: list[int], seed: int | None = None) -> Batch:
        """The batch of ``indices``. With ``seed``, its random draws (speed perturbation, dither)
        come from generators seeded by it alone, so that the batch is the same in whichever
        process computes it."""
        if seed is not None:
            self.generator = torch.Generator().manual_seed(seed)
            self.np_rng = np.random.default_rng(seed)
        feats, lens = features.pad_batch([self.utterance(i) for i in indices])
        y, y_lens = pad_labels([self.labels[i] for i in indices])
        return feats, lens, y, y_lens

    def keyed_batch(self, key: tuple[list[int], int]) -> Batch:
        """``batch(indices, seed)`` for a key ``(indices, seed)`` of data.loader.load_ahead."""
        return self.batch(*key)


def eval_batches(n: int, batch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's share of the evaluation set in batches of at most ``batch``."""
    mine = list(range(rank, n, world_size))
    return [mine[i:i + batch] for i in range(0, len(mine), batch)]


class DaliPipeline:
    """The reference's DALI feature pipeline (common/data/dali/pipeline.py) on the GPU, fed batch
    by batch in the sampler's order through an external source, so that it yields exactly the
    batches TorchPipeline yields: decoding (resampled to rate * 16 kHz for speed perturbation),
    silence trimming, dither, preemphasis, spectrogram, mel filterbank, log, per-feature
    normalization and padding. The Hann window is passed explicitly (the one the reference's
    PyTorch features use, symmetric, 320 samples) so that both paths use the same window."""

    def __init__(self, samples: list[Sample], tokenizer: Tokenizer, cfg: FeatureConfig,
                 augment: AugmentConfig | None, train: bool, seed: int, device_id: int,
                 max_batch: int, num_threads: int = 4) -> None:
        from nvidia.dali import fn, pipeline_def, types

        self.samples, self.cfg, self.train = samples, cfg, train
        self.labels = [tokenizer.tokenize(s.transcript) for s in samples]
        self.device_id = device_id
        speed = augment is not None and train and augment.speed_p > 0
        window = torch.hann_window(cfg.win_length, periodic=False, dtype=torch.float64).tolist()

        @pipeline_def(batch_size=max_batch, num_threads=num_threads, device_id=device_id,
                      seed=seed, prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def pipe():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            if speed:
                rate = fn.random.uniform(range=[augment.speed_min, augment.speed_max])
                audio, _ = fn.decoders.audio(encoded, dtype=types.FLOAT, downmix=True,
                                             sample_rate=rate * cfg.sample_rate)
            else:
                audio, _ = fn.decoders.audio(encoded, dtype=types.FLOAT, downmix=True,
                                             sample_rate=cfg.sample_rate)
            if cfg.trim_silence_db is not None:
                begin, length = fn.nonsilent_region(audio, cutoff_db=cfg.trim_silence_db)
                audio = fn.slice(audio, fn.cast(begin, dtype=types.FLOAT),
                                 fn.cast(length, dtype=types.FLOAT), axes=[0],
                                 normalized_anchor=False, normalized_shape=False)
            audio = audio.gpu()
            if cfg.dither > 0:
                audio = audio + fn.random.normal(audio, device="gpu") * cfg.dither
            audio = fn.preemphasis_filter(audio, preemph_coeff=cfg.preemph)
            spec = fn.spectrogram(audio, nfft=cfg.n_fft, window_length=cfg.win_length,
                                  window_step=cfg.hop_length, window_fn=window)
            mel = fn.mel_filter_bank(spec, sample_rate=cfg.sample_rate, nfilter=cfg.n_filt,
                                     normalize=True)
            logmel = fn.to_decibels(mel, multiplier=math.log(10), reference=1.0,
                                    cutoff_db=math.log(cfg.log_floor))
            shape = fn.shapes(logmel)
            logmel = fn.normalize(logmel, axes=[1])
            return fn.pad(logmel, fill_value=0), shape

        self.pipe = pipe()
        self.pipe.build()

    def batch(self, indices: list[int]) -> Batch:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        encoded = [np.fromfile(self.samples[i].path, dtype=np.uint8) for i in indices]
        self.pipe.feed_input("encoded", encoded)
        feats_tl, shapes_tl = self.pipe.run()
        feats_t = feats_tl.as_tensor()
        feats = torch.empty(feats_t.shape(), dtype=torch.float32,
                            device=torch.device("cuda", self.device_id))
        feed_ndarray(feats_t, feats, cuda_stream=torch.cuda.current_stream(feats.device))
        shapes = torch.as_tensor(np.array(shapes_tl.as_cpu().as_array()), dtype=torch.int64)
        lens = shapes[:, 1].to(torch.int32)
        y, y_lens = pad_labels([self.labels[i] for i in indices])
        return feats, lens, y, y_lens
