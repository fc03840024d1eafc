"""Audio features in plain PyTorch: the CPU path of the input pipeline.

It computes what the reference's DALI pipeline computes (common/data/dali/pipeline.py): decode,
speed perturbation by resampling, silence trimming at -60 dB, dither, preemphasis, a power
spectrogram (centered Hann windows), a mel filterbank (Slaney scale, area-normalized triangles),
the natural log with a 1e-20 floor, and per-feature normalization over time; then, on a padded
batch, SpecAugment and frame splicing (common/data/features.py), as the reference does on the GPU.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from mlperf_fast.workloads.rnnt.config import AugmentConfig, FeatureConfig

# -- resampling ---------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _sinc_kernel(orig: int, new: int, width: int = 6, rolloff: float = 0.99
                 ) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc interpolation filters, one per output phase: (new, 1, 2*pad + orig)."""
    base = min(orig, new) * rolloff
    pad = int(math.ceil(width * orig / base))
    idx = torch.arange(-pad, pad + orig, dtype=torch.float64) / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + idx[None, :]) * base
    t = t.clamp(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1.0, t))
    kernel = sinc * window * (base / orig)
    return kernel.to(torch.float32)[:, None, :], pad


def resample(x: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of float signals (..., N) from ``orig_rate`` to ``new_rate`` Hz.
    Output length ceil(N * new / orig)."""
    if orig_rate == new_rate:
        return x
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    shape = x.shape
    x = x.reshape(-1, 1, shape[-1]).float()
    kernel, pad = _sinc_kernel(orig, new)
    y = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (pad, pad + orig)),
                                   kernel.to(x.device), stride=orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    out_len = int(math.ceil(new * shape[-1] / orig))
    return y[:, :out_len].reshape(*shape[:-1], out_len)


def speed_perturb(audio: torch.Tensor, rate: float, sample_rate: int) -> torch.Tensor:
    """Resample as if the audio were recorded at ``sample_rate * rate`` (the reference decodes
    at that rate and reads the result at ``sample_rate``: rate > 1 slows speech down). The rate
    is rounded to 100 Hz, which keeps the polyphase filter bank small."""
    target = int(round(sample_rate * rate / 100.0)) * 100
    return resample(audio, sample_rate, target)


# -- per-utterance features ---------------------------------------------------------------------


def trim_silence(audio: torch.Tensor, cutoff_db: float, window: int = 2048) -> torch.Tensor:
    """The span of ``audio`` (N,) whose short-term power (mean square over ``window`` samples)
    is within ``cutoff_db`` of the loudest window (DALI's NonsilentRegion, reference power =
    the maximum)."""
    n = audio.shape[-1]
    if n == 0:
        return audio
    power = torch.nn.functional.pad(audio.double() ** 2, (window - 1, 0))
    csum = torch.cumsum(power, 0)
    mms = (csum[window - 1:] - torch.cat([csum.new_zeros(1), csum[:-window]])) / window
    threshold = mms.max() * 10.0 ** (cutoff_db / 10.0)
    loud = torch.nonzero(mms >= threshold).flatten()
    if loud.numel() == 0 or mms.max() <= 0:
        return audio[:0]
    begin = max(int(loud[0]) - window + 1, 0)
    end = int(loud[-1]) + 1
    return audio[begin:end]


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> torch.Tensor:
    """Slaney-scale triangular filters, area-normalized: (n_mels, n_fft // 2 + 1) float32
    (librosa.filters.mel's defaults, which the reference uses; DALI's MelFilterBank with
    normalize=True)."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = math.log(6.4) / 27.0

    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        return torch.where(f >= min_log_hz, min_log_mel + torch.log(f.clamp_min(1e-10)
                                                                     / min_log_hz) / logstep,
                           f / f_sp)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)),
                           m * f_sp)

    fft_freqs = torch.linspace(0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = hz_to_mel(torch.tensor([fmin, fmax], dtype=torch.float64))
    mel_f = mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))
    fdiff = mel_f[1:] - mel_f[:-1]
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.to(torch.float32)


def log_mel(audio: torch.Tensor, cfg: FeatureConfig, generator: torch.Generator | None = None,
            dither: bool = True) -> torch.Tensor:
    """Normalized log-mel features (n_filt, frames) float32 of one utterance (N,) float32
    (already trimmed and perturbed). frames = N // hop + 1."""
    x = audio.float()
    if dither and cfg.dither > 0:
        x = x + cfg.dither * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    # preemphasis; the first sample keeps x[0] - k * x[0] (DALI's 'clamp' border)
    x = torch.cat([x[:1] * (1.0 - cfg.preemph), x[1:] - cfg.preemph * x[:-1]])
    if x.numel() <= cfg.n_fft // 2:  # reflect padding needs more samples than half a frame
        x = torch.nn.functional.pad(x, (0, cfg.n_fft // 2 + 1 - x.numel()))
    window = torch.hann_window(cfg.win_length, periodic=False, dtype=torch.float32)
    spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                      window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_filt) @ power
    logmel = torch.log(mel.clamp_min(cfg.log_floor))
    mean = logmel.mean(dim=1, keepdim=True)
    std = logmel.var(dim=1, unbiased=False, keepdim=True).clamp_min(1e-20).sqrt()
    return (logmel - mean) / std


# -- batch features (on the training device) ----------------------------------------------------


def pad_batch(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F, T_max) zero-padded, and the lengths (B,) int32."""
    lens = torch.tensor([f.shape[1] for f in feats], dtype=torch.int32)
    out = feats[0].new_zeros(len(feats), feats[0].shape[0], int(lens.max()))
    for i, f in enumerate(feats):
        out[i, :, :f.shape[1]] = f
    return out, lens


def spec_augment(x: torch.Tensor, lens: torch.Tensor, cfg: AugmentConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Frequency and adaptive time masks on (B, F, T) (common/data/features.py SpecAugment):
    per utterance, ``freq_masks`` bands of width U[min_freq, max_freq] and ``time_masks`` spans
    of width U[min_time, round(len * max_time)], placed uniformly in the padded extent."""
    b, f, t = x.shape
    dev = x.device

    def uniform_int(low: torch.Tensor, high: torch.Tensor, n: int) -> torch.Tensor:
        # integers in [low, high] (inclusive), one row per utterance
        r = torch.rand((b, n), generator=generator).to(dev)
        return (low[:, None] + (r * (high - low + 1)[:, None]).floor()).long()

    zeros = torch.zeros(b, dtype=torch.long, device=dev)
    mask = torch.zeros((b, f, t), dtype=torch.bool, device=dev)
    if cfg.freq_masks > 0:
        w = uniform_int(zeros + cfg.min_freq, zeros + cfg.max_freq, cfg.freq_masks)
        f0 = (torch.rand((b, cfg.freq_masks), generator=generator).to(dev)
              * (f - w + 1).clamp_min(1)).floor().long()
        rng_f = torch.arange(f, device=dev)
        band = (rng_f[None, None, :] >= f0[..., None]) & (rng_f[None, None, :] < (f0 + w)[..., None])
        mask |= band.any(dim=1)[:, :, None]
    if cfg.time_masks > 0:
        max_t = cfg.max_time
        if 0 < max_t < 1.0:
            high = torch.round(lens.to(dev).double() * max_t).long()
        else:
            high = zeros + int(max_t)
        w = uniform_int(zeros + cfg.min_time, high, cfg.time_masks)
        t0 = (torch.rand((b, cfg.time_masks), generator=generator).to(dev)
              * (t - w + 1).clamp_min(1)).floor().long()
        rng_t = torch.arange(t, device=dev)
        span = (rng_t[None, None, :] >= t0[..., None]) & (rng_t[None, None, :] < (t0 + w)[..., None])
        mask |= span.any(dim=1)[:, None, :]
    return x.masked_fill(mask, 0.0)


def splice_frames(x: torch.Tensor, lens: torch.Tensor, stacking: int, subsampling: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``stacking`` consecutive frames along features, keep every ``subsampling``-th:
    (B, F, T) -> (B, F * stacking, ceil(T / subsampling)), as stack_subsample_frames."""
    seq = [x]
    for n in range(1, stacking):
        shifted = torch.zeros_like(x)
        shifted[:, :, :-n] = x[:, :, n:]
        seq.append(shifted)
    x = torch.cat(seq, dim=1)[:, :, ::subsampling]
    if subsampling > 1:
        lens = torch.div(lens + subsampling - 1, subsampling, rounding_mode="floor").int()
        x = x[:, :, :int(lens.max())]
    return x, lens


def batch_features(x: torch.Tensor, lens: torch.Tensor, cfg: FeatureConfig,
                   augment: AugmentConfig | None, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded log-mels (B, F, T) -> encoder input (T', B, F * stacking) and lengths (B,) int32."""
    if augment is not None:
        x = spec_augment(x, lens, augment, generator)
    x, lens = splice_frames(x, lens, cfg.frame_stacking, cfg.frame_subsampling)
    return x.permute(2, 0, 1).contiguous(), lens
