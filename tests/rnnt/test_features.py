"""The PyTorch feature pipeline against direct NumPy computations and the reference's
definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlperf_fast.workloads.rnnt import features
from mlperf_fast.workloads.rnnt.config import AugmentConfig, FeatureConfig

CFG = FeatureConfig()


def test_resample_sine():
    t = np.arange(22050) / 22050.0
    x = torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    y = features.resample(x, 22050, 16000)
    assert y.shape == (16000,)
    want = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000.0)
    # away from the edges (the filter sees zeros beyond them) a 440 Hz tone is reproduced to
    # the filter's passband ripple
    assert np.abs(y.numpy()[200:-200] - want[200:-200]).max() < 2e-3


@pytest.mark.parametrize("rate", [0.85, 1.0, 1.15])
def test_speed_perturb_length(rate):
    x = torch.randn(16000)
    y = features.speed_perturb(x, rate, 16000)
    assert abs(len(y) - 16000 * rate) <= 100 * 16000 / 16000 + 1


def test_trim_silence():
    sr = 16000
    tone = np.sin(2 * np.pi * 300 * np.arange(sr) / sr).astype(np.float32)
    x = np.concatenate([np.zeros(sr, np.float32), tone, np.full(sr, 1e-5, np.float32)])
    y = features.trim_silence(torch.from_numpy(x), -60.0)
    # the loud second survives, plus at most one power window (2048) of its edges
    assert sr <= len(y) <= sr + 2 * 2048
    assert features.trim_silence(torch.zeros(10), -60.0).numel() == 0


def test_mel_filterbank_shape_and_area():
    fb = features.mel_filterbank(16000, 512, 80)
    assert fb.shape == (80, 257) and float(fb.min()) >= 0
    df = 16000 / 512
    area = fb.sum(1) * df  # Slaney normalization: unit area per triangle in Hz
    # the narrow low triangles span ~1 FFT bin and are sampled coarsely; the wide ones integrate
    # to 1 within the sampling error of a triangle over ~10+ bins
    assert torch.allclose(area[40:], torch.ones(40), atol=0.06)
    centers = fb.argmax(1)
    assert torch.all(centers[1:] >= centers[:-1])


def _numpy_log_mel(x: np.ndarray) -> np.ndarray:
    """The features from their definition: preemphasis, centered reflect-padded frames with a
    symmetric Hann window of 320 inside 512, |rfft|^2, mel, ln, per-feature standardization."""
    y = np.concatenate([[x[0] * (1 - 0.97)], x[1:] - 0.97 * x[:-1]])
    pad = 256
    yp = np.pad(y, pad, mode="reflect")
    n_frames = len(x) // 160 + 1
    win = np.zeros(512)
    n = np.arange(320)
    win[96:96 + 320] = 0.5 - 0.5 * np.cos(2 * np.pi * n / 319)
    frames = np.stack([yp[i * 160:i * 160 + 512] * win for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = features.mel_filterbank(16000, 512, 80).double().numpy() @ power.T
    lm = np.log(np.maximum(mel, 1e-20))
    return (lm - lm.mean(1, keepdims=True)) / lm.std(1, keepdims=True)


def test_log_mel_matches_definition(rng_seed):
    g = np.random.default_rng(rng_seed)
    x = (g.standard_normal(16000 + 37) * 0.1).astype(np.float32)
    got = features.log_mel(torch.from_numpy(x), CFG, dither=False)
    assert got.shape == (80, len(x) // 160 + 1)
    want = _numpy_log_mel(x.astype(np.float64))
    # float32 FFT and matmul against float64: standardized values agree to ~1e-4
    np.testing.assert_allclose(got.numpy(), want, atol=2e-3, rtol=1e-3)
    assert torch.allclose(got.mean(1), torch.zeros(80), atol=1e-4)
    assert torch.allclose(got.std(1, unbiased=False), torch.ones(80), atol=1e-3)


def _reference_splice(x, x_lens, stacking, subsampling):
    """common/data/features.py stack_subsample_frames, restated."""
    seq = [x]
    for n in range(1, stacking):
        tmp = torch.zeros_like(x)
        tmp[:, :, :-n] = x[:, :, n:]
        seq.append(tmp)
    x = torch.cat(seq, dim=1)[:, :, ::subsampling]
    x_lens = torch.ceil(x_lens.float() / subsampling).int()
    if x.size(2) > x_lens.max().item():
        x = x[:, :, :x_lens.max().item()]
    return x, x_lens


@pytest.mark.parametrize("t", [9, 10, 11])
def test_splice_frames_matches_reference(t):
    x = torch.randn(3, 4, t)
    lens = torch.tensor([t, t - 2, 1], dtype=torch.int32)
    got = features.splice_frames(x, lens, 3, 3)
    want = _reference_splice(x, lens, 3, 3)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_spec_augment_masks(rng_seed):
    g = torch.Generator().manual_seed(rng_seed)
    x = torch.ones(6, 80, 400)
    lens = torch.tensor([400, 350, 300, 200, 100, 50], dtype=torch.int32)
    cfg = AugmentConfig()
    y = features.spec_augment(x, lens, cfg, g)
    for i in range(6):
        freq_masked = (y[i] == 0).all(dim=1).sum()
        time_masked = (y[i] == 0).all(dim=0).sum()
        assert freq_masked <= cfg.freq_masks * cfg.max_freq
        assert time_masked <= cfg.time_masks * round(int(lens[i]) * cfg.max_time)
    assert (y == 0).any()
    none = AugmentConfig(freq_masks=0, time_masks=0)
    assert torch.equal(features.spec_augment(x, lens, none, g), x)


def test_batch_features_layout():
    feats = [torch.randn(80, n) for n in (31, 12, 7)]
    x, lens = features.pad_batch(feats)
    assert x.shape == (3, 80, 31) and lens.tolist() == [31, 12, 7]
    out, out_lens = features.batch_features(x, lens, CFG, None)
    assert out.shape == (math.ceil(31 / 3), 3, 240) and out_lens.tolist() == [11, 4, 3]
