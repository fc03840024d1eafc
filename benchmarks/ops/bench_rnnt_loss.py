"""RNN-T loss forward + backward on materialized logits, the MLPerf RNN-T training shape.

Baseline: torchaudio.functional.rnnt_loss (float32 only; it computes the gradient in its
forward and keeps it). Floor: the logits read twice (statistics, then gradient) and the gradient
written once.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops import rnnt_loss

B, T, U, V = 32, 200, 81, 1024


def _inputs(dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(B, T, U + 1, V, device="cuda", generator=gen).to(dtype).requires_grad_()
    targets = torch.randint(0, V - 1, (B, U), device="cuda", generator=gen, dtype=torch.int32)
    t_lens = torch.full((B,), T, device="cuda", dtype=torch.int32)
    u_lens = torch.full((B,), U, device="cuda", dtype=torch.int32)
    return logits, targets, t_lens, u_lens


def _step(fn, logits, *args):
    def run():
        logits.grad = None
        fn(logits, *args).backward()
    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_rnnt_loss_mlperf_shape(measure, dtype):
    logits, targets, t_lens, u_lens = _inputs(dtype)
    name = str(dtype).removeprefix("torch.")
    group = f"rnnt_loss fwd+bwd, {name} logits"
    shape = f"B={B}, T={T}, U={U}, V={V}"
    nbytes = 3 * logits.numel() * logits.element_size()
    try:
        import torchaudio.functional as F
    except ImportError:
        F = None
    if F is not None and dtype == torch.float32:
        measure(group, "torchaudio rnnt_loss", _step(F.rnnt_loss, logits, targets, t_lens, u_lens),
                role="baseline", shape=shape, bytes=nbytes)
    elif F is not None:
        # torchaudio has no bfloat16 kernel: what a user does instead is upcast.
        measure(group, "torchaudio rnnt_loss on logits.float()",
                _step(lambda x, *a: F.rnnt_loss(x.float(), *a), logits, targets, t_lens, u_lens),
                role="baseline", shape=shape, bytes=nbytes)
    measure(group, "mlperf_fast triton", _step(rnnt_loss, logits, targets, t_lens, u_lens),
            shape=shape, bytes=nbytes)
