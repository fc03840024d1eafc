"""sigmoid_focal_loss, forward and gradient, against torchvision's formula in float64.

Tolerances: float32 paths evaluate exp/log in float32 (Triton's fast forms on the GPU), a few ulp
per element, so 2e-5 relative; the cross-entropy's max(x, 0) - x t cancels for confident logits,
leaving an absolute error of about an ulp of |x| (2e-6 at |x| = 16, the tails drawn here), so the
absolute floor is 4e-6;
sums over up to ~1e5 elements are reduced in float32 trees: 2e-5 relative. float16/bfloat16
inputs are computed in float32 and rounded once to the output dtype: 1e-3 / 8e-3 relative (one
rounding of each format, plus the inputs' own rounding which the reference sees too). float64:
1e-9 (the GPU's float64 exp/log are within a few ulp).
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.sigmoid_focal_loss import sigmoid_focal_loss, sigmoid_focal_loss_torch

TOL = {torch.float32: (2e-5, 4e-6), torch.float64: (1e-9, 1e-12),
       torch.float16: (1e-3, 1e-5), torch.bfloat16: (8e-3, 1e-4)}


@pytest.fixture
def fl_backend(backend):
    if backend.name == "native":
        pytest.skip("sigmoid_focal_loss has Triton and torch backends")
    return backend


def reference(x, t, alpha, gamma, reduction):
    x = x.detach().double().cpu().requires_grad_(True)
    loss = sigmoid_focal_loss_torch(x, t.double().cpu(), alpha, gamma, reduction)
    return x, loss


def make(gen, shape, dtype, device, scale=4.0, soft=False):
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale)
    t = torch.rand(shape, generator=gen, dtype=torch.float64) if soft else \
        (torch.rand(shape, generator=gen) < 0.1).double()
    return x.to(device, dtype), t.to(device, dtype)


def check(x, t, alpha, gamma, reduction, backend, dtype):
    rtol, atol = TOL[dtype]
    xr = x.detach().clone().requires_grad_(True)
    loss = sigmoid_focal_loss(xr, t, alpha, gamma, reduction, backend=backend.name)
    ref_x, ref = reference(x, t, alpha, gamma, reduction)
    assert loss.dtype == x.dtype and loss.shape == ref.shape and loss.device == x.device
    torch.testing.assert_close(loss.detach().double().cpu(), ref.detach(), rtol=rtol, atol=atol)
    gen = torch.Generator().manual_seed(1)
    # The reference sees the incoming gradient as rounded to the loss's dtype, as the kernel does.
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(loss.dtype)
    loss.backward(g.to(x.device))
    ref.backward(g.double())
    torch.testing.assert_close(xr.grad.double().cpu(), ref_x.grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).removeprefix("torch."))
def test_matches_float64_reference(fl_backend, dtype, reduction, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, t = make(gen, (3, 1000, 13), dtype, fl_backend.device)
    rtol, atol = TOL[dtype]
    if reduction != "none" and dtype in (torch.float16, torch.bfloat16):
        pytest.skip("a reduced half-precision loss is one rounding of a float32 sum; "
                    "covered by the float32 cases")
    check(x, t, 0.25, 2.0, reduction, fl_backend, dtype)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.0),
                                         (0.25, 0.5), (0.25, 3.7)])
def test_alpha_gamma(fl_backend, alpha, gamma, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, t = make(gen, (4097,), torch.float32, fl_backend.device)
    check(x, t, alpha, gamma, "sum", fl_backend, torch.float32)
    check(x, t, alpha, gamma, "none", fl_backend, torch.float32)


def test_soft_targets_and_extreme_logits(fl_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, t = make(gen, (2000,), torch.float64, fl_backend.device, scale=20.0, soft=True)
    check(x, t, 0.25, 2.0, "none", fl_backend, torch.float64)
    x = torch.tensor([-100.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 100.0], device=fl_backend.device)
    for target in (0.0, 1.0):
        check(x, torch.full_like(x, target), 0.25, 2.0, "none", fl_backend, torch.float32)
        # gamma < 1: (1 - p_t) ** gamma has an infinite slope at 0, where a confident logit's
        # 1 - p_t lands if it is computed by cancellation; the gradient must stay finite
        check(x, torch.full_like(x, target), 0.25, 0.5, "none", fl_backend, torch.float32)


def test_empty_and_non_contiguous(fl_backend, rng_seed):
    d = fl_backend.device
    e = torch.zeros(0, 5, device=d)
    assert sigmoid_focal_loss(e, e, reduction="sum", backend=fl_backend.name).item() == 0
    assert sigmoid_focal_loss(e, e, reduction="none", backend=fl_backend.name).shape == (0, 5)
    gen = torch.Generator().manual_seed(rng_seed)
    x, t = make(gen, (64, 90), torch.float32, d)
    check(x.t(), t.t(), 0.25, 2.0, "none", fl_backend, torch.float32)
    check(x[:, ::3], t[:, ::3], 0.25, 2.0, "mean", fl_backend, torch.float32)


def test_targets_requiring_grad_take_the_torch_path(fl_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, t = make(gen, (100,), torch.float64, fl_backend.device, soft=True)
    t.requires_grad_(True)
    sigmoid_focal_loss(x, t, reduction="sum", backend=fl_backend.name).backward()
    tr = t.detach().cpu().requires_grad_(True)
    sigmoid_focal_loss_torch(x.cpu(), tr, reduction="sum").backward()
    torch.testing.assert_close(t.grad.cpu(), tr.grad)


def test_matches_torchvision(fl_backend, rng_seed):
    tv = pytest.importorskip("torchvision")
    gen = torch.Generator().manual_seed(rng_seed)
    x, t = make(gen, (500, 7), torch.float32, fl_backend.device)
    got = sigmoid_focal_loss(x, t, 0.25, 2.0, "sum", backend=fl_backend.name)
    want = tv.ops.sigmoid_focal_loss(x, t, 0.25, 2.0, "sum")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


def test_bad_inputs():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="inputs"):
        sigmoid_focal_loss(x.tolist(), x)
    with pytest.raises(ValueError, match="targets"):
        sigmoid_focal_loss(x, torch.zeros(4, 2))
    with pytest.raises(TypeError, match="targets"):
        sigmoid_focal_loss(x, torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, torch.zeros(4, 3), reduction="max")
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss(x, torch.zeros(4, 3), gamma=-1.0)
    with pytest.raises(ValueError, match="backend"):
        sigmoid_focal_loss(x, torch.zeros(4, 3), backend="native")


def test_fake_and_compile():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(8, 3))
        out = torch.ops.mlperf_fast.sigmoid_focal_loss_triton(x, x, 0.25, 2.0, "sum")
        assert out.shape == ()
        out = torch.ops.mlperf_fast.sigmoid_focal_loss_triton(x, x, 0.25, 2.0, "none")
        assert out.shape == (8, 3)


@pytest.mark.cuda
def test_mixed_devices_rejected():
    with pytest.raises(ValueError, match="device|on"):
        sigmoid_focal_loss(torch.randn(3, device="cuda"), torch.zeros(3))
