"""rnnt_loss against a float64 loop-and-autograd oracle (and torchaudio on a GPU).

Tolerances: the kernels work in float32 (logsumexp over the vocabulary, log-space recursions of
T + U steps); on these lattices the losses agree with float64 to ~1e-6 relative and gradients
(each in [-1, 1]) to ~1e-6 absolute, so 2e-5 / 2e-5 is the bound, well below what a wrong
transition (a whole alignment's probability) would change. bfloat16 and float16 logits are
compared against the oracle run on the same rounded logits, so only float32 accumulation and the
rounding of the stored gradient (2^-8 relative for bfloat16) remain. The torch path in float64
matches the oracle to rounding (1e-10).
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

from mlperf_fast.ops import rnnt_loss

sys.path.insert(0, os.path.dirname(__file__))
from rnnt_reference import rnnt_grad_reference  # noqa: E402

LOSS_BACKENDS = [
    pytest.param(("torch", "cpu"), id="torch-cpu"),
    pytest.param(("triton", "cpu"), id="triton-interpreter", marks=pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter needs TRITON_INTERPRET=1")),
    pytest.param(("triton", "cuda"), id="triton-cuda", marks=pytest.mark.cuda),
    pytest.param(("torch", "cuda"), id="torch-cuda", marks=pytest.mark.cuda),
]
GRAD_ATOL = {torch.float32: 2e-5, torch.float64: 1e-10, torch.bfloat16: 1e-2, torch.float16: 2e-3}
# The loss is computed in float32 and returned in the logits' dtype: half precision adds one
# rounding of it (2^-9 relative for bfloat16, 2^-12 for float16).
LOSS_RTOL = {torch.float32: 2e-5, torch.float64: 1e-10, torch.bfloat16: 4e-3, torch.float16: 5e-4}


@pytest.fixture(params=LOSS_BACKENDS)
def loss_backend(request):
    return request.param


def make_case(gen, bsz, t_max, u_max, classes, t_lens=None, u_lens=None, blank=-1,
              dtype=torch.float32, scale=2.0):
    logits = (torch.randn(bsz, t_max, u_max + 1, classes, generator=gen) * scale).to(dtype)
    blank_idx = blank % classes
    labels = torch.randint(0, classes - 1, (bsz, u_max), generator=gen)
    labels = labels + (labels >= blank_idx).long()  # every label differs from blank
    if t_lens is None:
        t_lens = torch.randint(1, t_max + 1, (bsz,), generator=gen)
        t_lens[0] = t_max
    if u_lens is None:
        u_lens = torch.randint(0, u_max + 1, (bsz,), generator=gen)
        u_lens[0] = u_max
    t_lens = torch.as_tensor(t_lens, dtype=torch.int32)
    u_lens = torch.as_tensor(u_lens, dtype=torch.int32)
    return logits, labels.to(torch.int32), t_lens, u_lens


def run(case, backend, device, reduction="none", blank=-1, clamp=-1.0, fused=True):
    logits, targets, t_lens, u_lens = case
    x = logits.to(device).requires_grad_()
    loss = rnnt_loss(x, targets.to(device), t_lens.to(device), u_lens.to(device), blank=blank,
                     clamp=clamp, reduction=reduction, fused_log_softmax=fused, backend=backend)
    # Weights exact in the loss's dtype, so that the reference weighs by the same values.
    weight = torch.linspace(0.5, 1.5, max(len(t_lens), 1))[: len(t_lens)].to(logits.dtype).float()
    if reduction == "none":
        (loss * weight.to(device).to(loss.dtype)).sum().backward()
    else:
        loss.backward()
    return loss.detach().cpu(), x.grad.cpu(), weight


def check(case, backend, device, reduction="none", blank=-1, clamp=-1.0, fused=True):
    logits, targets, t_lens, u_lens = case
    loss, grad, weight = run(case, backend, device, reduction, blank, clamp, fused)
    bsz = len(t_lens)
    w = {"none": weight, "sum": torch.ones(bsz), "mean": torch.full((bsz,), 1.0 / bsz)}[reduction]
    ref_costs, ref_grad = rnnt_grad_reference(logits, targets, t_lens, u_lens, blank, fused,
                                              clamp, w)
    ref_loss = {"none": ref_costs, "sum": ref_costs.sum(), "mean": ref_costs.mean()}[reduction]
    dt = logits.dtype
    assert grad.dtype == dt
    assert loss.dtype == dt  # torchaudio's contract: the loss in the logits' dtype
    torch.testing.assert_close(loss.double(), ref_loss, rtol=LOSS_RTOL[dt], atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=0, atol=GRAD_ATOL[dt])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_random_lengths(loss_backend, reduction, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    check(make_case(gen, 4, 7, 5, 11), *loss_backend, reduction=reduction)


@pytest.mark.parametrize("t_max,u_max,t_lens,u_lens", [
    (1, 0, [1], [0]),                       # one frame, no label: a single blank
    (1, 3, [1, 1], [3, 0]),                 # T = 1: every label in the first frame
    (6, 0, [6, 2, 1], [0, 0, 0]),           # U = 0: all-blank targets
    (5, 4, [5, 5], [4, 4]),                 # maximal lengths everywhere
    (5, 4, [1, 5, 3], [4, 0, 2]),           # mixed extremes
], ids=["T1-U0", "T1", "all-blank", "maximal", "mixed"])
def test_edge_lengths(loss_backend, t_max, u_max, t_lens, u_lens, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    check(make_case(gen, len(t_lens), t_max, u_max, 9, t_lens, u_lens), *loss_backend)


@pytest.mark.parametrize("blank", [0, 3, -1])
def test_blank_index(loss_backend, blank, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    check(make_case(gen, 3, 5, 4, 8, blank=blank), *loss_backend, blank=blank)


def test_clamp(loss_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    check(make_case(gen, 3, 6, 4, 8), *loss_backend, clamp=0.05)


def test_not_fused(loss_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    logits, targets, t_lens, u_lens = make_case(gen, 3, 5, 4, 8)
    check((logits.log_softmax(-1), targets, t_lens, u_lens), *loss_backend, fused=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_logits(loss_backend, dtype, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    check(make_case(gen, 3, 6, 4, 40, dtype=dtype), *loss_backend)


def test_float64_torch_path(rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    check(make_case(gen, 3, 6, 4, 10, dtype=torch.float64), "auto", "cpu")


def test_large_vocab_and_long_lattice(loss_backend, rng_seed):
    # Vocabulary past one tile (4096) and a lattice long enough for the float32 recursions.
    gen = torch.Generator().manual_seed(rng_seed)
    logits, targets, t_lens, u_lens = make_case(gen, 2, 24, 6, 4100, scale=1.0)
    loss, grad, weight = run((logits, targets, t_lens, u_lens), *loss_backend)
    ref, _ = rnnt_grad_reference(logits, targets, t_lens, u_lens)
    torch.testing.assert_close(loss.double(), ref, rtol=2e-5, atol=1e-5)
    # Each utterance's gradient sums to zero over the vocabulary at every node (flow in equals
    # flow out); 4100 float32 terms of up to 1 each round to a few 1e-5.
    torch.testing.assert_close(grad.double().sum(-1), torch.zeros(grad.shape[:-1], dtype=torch.float64),
                               rtol=0, atol=3e-4)


def test_noncontiguous_logits_and_int64(loss_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    logits, targets, t_lens, u_lens = make_case(gen, 3, 5, 3, 9)
    wide = torch.randn(3, 5, 4, 20, generator=gen)
    wide[..., ::2] = 0
    view = wide[..., 1::2][..., :9]  # strided last dimension
    view.copy_(logits)
    device = loss_backend[1]
    x = view.to(device).requires_grad_()
    loss = rnnt_loss(x, targets.long().to(device), t_lens.long().to(device),
                     u_lens.long().to(device), reduction="sum", backend=loss_backend[0])
    loss.backward()
    ref, ref_grad = rnnt_grad_reference(logits, targets, t_lens, u_lens)
    torch.testing.assert_close(loss.cpu().double(), ref.sum(), rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.cpu().double(), ref_grad, rtol=0, atol=2e-5)


def test_backends_agree_on_cpu(rng_seed):
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs Triton's interpreter")
    gen = torch.Generator().manual_seed(rng_seed)
    case = make_case(gen, 3, 8, 6, 17)
    a = run(case, "torch", "cpu")
    b = run(case, "triton", "cpu")
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------- bad input


def _good(device="cpu"):
    gen = torch.Generator().manual_seed(0)
    logits, targets, t_lens, u_lens = make_case(gen, 2, 4, 3, 6, t_lens=[4, 2], u_lens=[3, 1])
    return logits.to(device), targets.to(device), t_lens.to(device), u_lens.to(device)


@pytest.mark.parametrize("mutate,exc,match", [
    (lambda a: a.update(logits=a["logits"][0]), ValueError, "logits must have shape"),
    (lambda a: a.update(logits=a["logits"].to(torch.int32)), TypeError, "logits has dtype"),
    (lambda a: a.update(targets=a["targets"].float()), TypeError, "targets has dtype"),
    (lambda a: a.update(logit_lengths=a["logit_lengths"].float()), TypeError, "logit_lengths has dtype"),
    (lambda a: a.update(target_lengths=a["target_lengths"][:1]), ValueError, "2 entries"),
    (lambda a: a.update(targets=a["targets"][:, :2]), ValueError, "targets must have shape"),
    (lambda a: a.update(logit_lengths=torch.tensor([5, 2], dtype=torch.int32)), ValueError,
     r"logit_lengths\[0\] = 5"),
    (lambda a: a.update(logit_lengths=torch.tensor([0, 2], dtype=torch.int32)), ValueError,
     r"logit_lengths\[0\] = 0"),
    (lambda a: a.update(target_lengths=torch.tensor([4, 1], dtype=torch.int32)), ValueError,
     "targets longer"),
    (lambda a: a.update(target_lengths=torch.tensor([-1, 1], dtype=torch.int32)), ValueError,
     r"target_lengths\[0\] = -1"),
    (lambda a: a.update(blank=6), ValueError, "blank=6 is out of range"),
    (lambda a: a.update(blank=-7), ValueError, "blank=-7 is out of range"),
    (lambda a: a.update(blank=1.0), TypeError, "blank must be an int"),
    (lambda a: a.update(reduction="avg"), ValueError, "reduction must be"),
    (lambda a: a["targets"].__setitem__((0, 1), 9), ValueError, "outside"),
    (lambda a: a["targets"].__setitem__((0, 1), 5), ValueError, "blank index 5"),
], ids=["ndim", "logits-dtype", "targets-dtype", "lengths-dtype", "batch", "targets-shape",
        "T-past-tensor", "T-zero", "U-too-long", "U-negative", "blank-high", "blank-low",
        "blank-type", "reduction", "label-range", "label-is-blank"])
def test_bad_input(mutate, exc, match):
    logits, targets, t_lens, u_lens = _good()
    args = dict(logits=logits, targets=targets, logit_lengths=t_lens, target_lengths=u_lens)
    mutate(args)
    with pytest.raises(exc, match=match):
        rnnt_loss(**args)


def test_padding_is_not_read():
    # Labels past a target length and logits past the lengths may hold anything (even NaN).
    logits, targets, t_lens, u_lens = _good()
    targets[1, 1:] = -5
    logits[1, 2:] = float("nan")
    logits[1, :, 2:] = float("nan")
    for backend in ["torch"] + (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" else []):
        x = logits.clone().requires_grad_()
        loss = rnnt_loss(x, targets, t_lens, u_lens, reduction="sum", backend=backend)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        assert (x.grad[1, 2:] == 0).all() and (x.grad[1, :, 2:] == 0).all()


# ------------------------------------------------------------------------------ torchaudio


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_torchaudio_parity(dtype, reduction, rng_seed):
    """Our CUDA kernel against torchaudio's CPU kernel, empty targets included.

    Not against torchaudio's CUDA kernel: on the H100 (torchaudio 2.11) it disagreed with its
    own CPU kernel, this package and the float64 reference on single utterances of random
    batches, e.g. 6.31 and -93.37 where the three others gave 122.40 and 93.37 (empty targets),
    and once by 5x for a non-empty target, while every other utterance matched to 1e-6."""
    F = pytest.importorskip("torchaudio.functional")
    gen = torch.Generator().manual_seed(rng_seed)
    logits, targets, t_lens, u_lens = make_case(gen, 8, 30, 12, 64, dtype=dtype)
    u_lens[1] = 0
    a = logits.cuda().requires_grad_()
    b = logits.float().requires_grad_()
    ours = rnnt_loss(a, targets.cuda(), t_lens.cuda(), u_lens.cuda(), reduction=reduction)
    theirs = F.rnnt_loss(b, targets, t_lens, u_lens, reduction=reduction)
    (ours.sum() if reduction == "none" else ours).backward()
    (theirs.sum() if reduction == "none" else theirs).backward()
    # float16 logits are widened exactly to float32 on both sides; the kernels then differ only
    # in summation order (1e-6 relative on losses of ~100). Our loss is returned in the logits'
    # dtype (as torchaudio returns it for its own float16 input), so in float16 it is rounded:
    # half an ulp, 2^-11 relative (0.25 at 708).
    loss_rtol = 2e-5 if dtype == torch.float32 else 2e-5 + 2.0 ** -11
    torch.testing.assert_close(ours.float().cpu(), theirs, rtol=loss_rtol, atol=2e-4)
    # Our gradient is stored in the logits' dtype: float16 rounds the softmax-sized (|g| < 1)
    # values by up to half an ulp, 2.4e-4.
    grad_atol = 2e-4 if dtype == torch.float32 else 5e-4
    torch.testing.assert_close(a.grad.float().cpu(), b.grad, rtol=0, atol=grad_atol)
