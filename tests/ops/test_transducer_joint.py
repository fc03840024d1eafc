"""Packed and dense transducer joint, and rnnt_loss_packed, against the dense PyTorch
composition and the float64 oracle.

Tolerances: the joint is one add and a relu (exact in float32 up to the add's rounding, and the
Triton path accumulates gradients in float32 over T or U+1 terms): 1e-5; the loss as in
test_rnnt_loss.py (float32 recursions): 2e-5.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

from mlperf_fast.ops import rnnt_loss_packed, transducer_joint

sys.path.insert(0, os.path.dirname(__file__))
from rnnt_reference import rnnt_grad_reference  # noqa: E402

BACKENDS = [
    pytest.param(("torch", "cpu"), id="torch-cpu"),
    pytest.param(("triton", "cpu"), id="triton-interpreter", marks=pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter needs TRITON_INTERPRET=1")),
    pytest.param(("triton", "cuda"), id="triton-cuda", marks=pytest.mark.cuda),
]


@pytest.fixture(params=BACKENDS)
def joint_backend(request):
    return request.param


def _case(gen, bsz=3, t_max=5, u_max=3, hid=6):
    f = torch.randn(bsz, t_max, hid, generator=gen)
    g = torch.randn(bsz, u_max + 1, hid, generator=gen)
    t_lens = torch.randint(1, t_max + 1, (bsz,), generator=gen)
    u_lens = torch.randint(0, u_max + 1, (bsz,), generator=gen)
    t_lens[0], u_lens[-1] = t_max, u_max
    return f, g, t_lens.int(), u_lens.int()


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "dense"])
def test_joint_matches_dense_torch(joint_backend, pack, rng_seed):
    backend, device = joint_backend
    gen = torch.Generator().manual_seed(rng_seed)
    f, g, t_lens, u_lens = _case(gen)
    w = torch.randn(7, 6, generator=gen)
    b = torch.randn(7, generator=gen)
    fr, gr, wr, br = (x.clone().requires_grad_() for x in (f, g, w, b))
    dense = F.linear(F.relu(fr[:, :, None] + gr[:, None]), wr, br)
    rows = [dense[i, : t_lens[i], : u_lens[i] + 1].reshape(-1, 7) for i in range(3)]
    want = torch.cat(rows) if pack else dense
    grad_out = torch.randn(want.shape, generator=gen)
    if not pack:  # padding rows are outside the op's contract: no gradient there
        tt = torch.arange(5)[None, :, None] < t_lens[:, None, None]
        uu = torch.arange(4)[None, None, :] <= u_lens[:, None, None]
        grad_out = grad_out * (tt & uu)[..., None]
    (want * grad_out).sum().backward()
    fo, go, wo, bo = (x.to(device).requires_grad_() for x in (f, g, w, b))
    out, offsets = transducer_joint(fo, go, t_lens.to(device), u_lens.to(device), wo, bo,
                                    pack_output=pack, backend=backend)
    (out * grad_out.to(device)).sum().backward()
    sizes = t_lens.long() * (u_lens.long() + 1)
    assert torch.equal(offsets.cpu(), torch.cumsum(sizes, 0))
    if pack:
        torch.testing.assert_close(out.detach().cpu(), want.detach(), rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close((out.detach().cpu() * (grad_out != 0)),
                                   want.detach() * (grad_out != 0), rtol=1e-5, atol=1e-5)
    for got, ref in ((fo, fr), (go, gr), (wo, wr), (bo, br)):
        torch.testing.assert_close(got.grad.cpu(), ref.grad, rtol=1e-5, atol=1e-5)


def test_packed_loss_matches_oracle(joint_backend, rng_seed):
    backend, device = joint_backend
    gen = torch.Generator().manual_seed(rng_seed)
    bsz, t_max, u_max, classes = 4, 5, 3, 9
    logits = torch.randn(bsz, t_max, u_max + 1, classes, generator=gen) * 2
    targets = torch.randint(0, classes - 1, (bsz, u_max), generator=gen, dtype=torch.int32)
    t_lens = torch.tensor([5, 1, 3, 2], dtype=torch.int32)
    u_lens = torch.tensor([3, 0, 2, 3], dtype=torch.int32)
    packed = torch.cat([logits[i, : t_lens[i], : u_lens[i] + 1].reshape(-1, classes)
                        for i in range(bsz)])
    ref_costs, ref_grad = rnnt_grad_reference(logits, targets, t_lens, u_lens)
    ref_packed_grad = torch.cat([ref_grad[i, : t_lens[i], : u_lens[i] + 1].reshape(-1, classes)
                                 for i in range(bsz)])
    x = packed.to(device).requires_grad_()
    loss = rnnt_loss_packed(x, targets.to(device), t_lens.to(device), u_lens.to(device),
                            reduction="sum", backend=backend)
    loss.backward()
    torch.testing.assert_close(loss.cpu().double(), ref_costs.sum(), rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.cpu().double(), ref_packed_grad, rtol=0, atol=2e-5)


def test_bad_input():
    f = torch.zeros(2, 4, 3)
    g = torch.zeros(2, 3, 3)
    t_lens = torch.tensor([4, 2])
    u_lens = torch.tensor([2, 1])
    with pytest.raises(ValueError, match="f_lengths"):
        transducer_joint(f, g, torch.tensor([5, 2]), u_lens)
    with pytest.raises(ValueError, match="targets longer"):
        transducer_joint(f, g, t_lens, torch.tensor([3, 1]))
    with pytest.raises(TypeError, match="g has dtype"):
        transducer_joint(f, g.double(), t_lens, u_lens)
    with pytest.raises(ValueError, match="weight must be"):
        transducer_joint(f, g, t_lens, u_lens, torch.zeros(5, 4))
    with pytest.raises(ValueError, match="packed_rows = 15 but the lengths make 16 rows"):
        transducer_joint(f, g, t_lens, u_lens, packed_rows=15)
    with pytest.raises(ValueError, match="bias must be"):
        transducer_joint(f, g, t_lens, u_lens, torch.zeros(5, 3), torch.zeros(4))
    with pytest.raises(TypeError, match="weight has dtype"):
        transducer_joint(f, g, t_lens, u_lens, torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="meta"):
        transducer_joint(f, g, t_lens, u_lens, torch.zeros(5, 3, device="meta"))
    with pytest.raises(ValueError, match="rows but the lengths make 16"):
        rnnt_loss_packed(torch.zeros(13, 5), torch.zeros(2, 2, dtype=torch.int32), t_lens, u_lens)
    with pytest.raises(ValueError, match="batch_offsets"):
        rnnt_loss_packed(torch.zeros(16, 5), torch.zeros(2, 2, dtype=torch.int32), t_lens, u_lens,
                         torch.tensor([11, 16]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("pack", [True, False], ids=["packed", "dense"])
def test_half_gradients_accumulate_in_float32(joint_backend, pack, dtype, rng_seed):
    """f's gradient sums over the U + 1 nodes of each frame (g's over the T frames): accumulated
    in float32 and rounded once it is within an ulp-scale 2^-9 (float16) / 2^-6 (bfloat16) of
    its own size of the float64 sum; accumulated in the half dtype it drifts by many ulps."""
    backend, device = joint_backend
    gen = torch.Generator().manual_seed(rng_seed)
    f, g, t_lens, u_lens = _case(gen, bsz=2, t_max=7, u_max=60, hid=8)
    t_lens[:], u_lens[:] = 7, 60
    f, g = f.to(device, dtype), g.to(device, dtype)
    fr, gr = f.clone().requires_grad_(), g.clone().requires_grad_()
    out, _ = transducer_joint(fr, gr, t_lens.to(device), u_lens.to(device), pack_output=pack,
                              backend=backend)
    assert out.dtype == dtype
    grad = torch.randn(out.shape, generator=gen).to(device, dtype)
    out.backward(grad)
    f64, g64 = f.double().cpu().requires_grad_(), g.double().cpu().requires_grad_()
    want = F.relu(f64[:, :, None] + g64[:, None])
    want = want.reshape(-1, 8) if pack else want
    (want * grad.double().cpu().reshape(want.shape)).sum().backward()
    eps = 2.0 ** -9 if dtype == torch.float16 else 2.0 ** -6
    for got, ref in ((fr.grad, f64.grad), (gr.grad, g64.grad)):
        err = (got.double().cpu() - ref).abs()
        assert bool((err <= eps * ref.abs() + 1e-3).all()), float(err.max())
