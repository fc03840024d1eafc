"""Synthetic utterances at the closed RNN-T sizes, shared by the step benchmarks: 12.3 s each
(LibriSpeech's mean training utterance) = 410 frames after stacking by 3, 60 sentencepiece
targets."""
from __future__ import annotations

import torch

from mlperf_fast.workloads.rnnt.config import CLOSED

T, U = 410, 60
V = CLOSED.data.vocab_size + 1  # the pieces and the blank


def synthetic_batch(batch: int, device: torch.device | str, seed: int = 0):
    """x (T, B, in_feats), x_lens (B,) int32, y (B, U) int32, y_lens (B,) int32 on ``device``,
    every utterance of full length."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((T, batch, CLOSED.features.in_feats), generator=g).to(device)
    x_lens = torch.full((batch,), T, dtype=torch.int32, device=device)
    y = torch.randint(1, V - 1, (batch, U), generator=g, dtype=torch.int32).to(device)
    y_lens = torch.full((batch,), U, dtype=torch.int32, device=device)
    return x, x_lens, y, y_lens
