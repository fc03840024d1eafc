"""bias_gelu, forward and both gradients, against its formula in float64.

Tolerances: float32 evaluates tanh (from exp) or erf in float32, a few ulp per element, and the
bias gradient sums up to a few thousand rows in float32 blocks: 1e-5 relative, 1e-6 absolute
(GELU and its slope are O(1) for O(1) inputs). float16/bfloat16 inputs are computed in float32
and rounded once to the output dtype: 1e-3 / 8e-3 relative (the inputs' own rounding is seen by
the reference too). float64: 1e-10. The torch backend's float32 results are PyTorch's, which
form 1 + erf(u), 1 + tanh(z) and 1 - tanh(z)^2 by cancellation: in the tail of negative inputs
(|u| ~ 9 at 4 sigma) an ulp of 1 becomes 0.5 |u| ~ 5e-7 absolute in the value (a few ulp of erf
reach 1.1e-6) and 0.5 k |u| (1 + 3 c u^2) ~ 1e-5 in the slope, so its absolute floor is 2e-5 for
both (the Triton kernel forms them from sigmoid(+-2z) and meets 1e-6).
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.bias_gelu import bias_gelu, bias_gelu_torch

TOL = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-10, 1e-12),
       torch.float16: (1e-3, 1e-5), torch.bfloat16: (8e-3, 1e-4)}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture
def bg_backend(backend):
    if backend.name == "native":
        pytest.skip("bias_gelu has Triton and torch backends")
    return backend


def make(gen, shape, dtype, device, bias_dtype=None, scale=2.0):
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    b = torch.randn(shape[-1], generator=gen, dtype=torch.float64)
    return x.to(device, dtype), b.to(device, bias_dtype or dtype)


def check(x, b, approximate, backend, gen=None):
    rtol, atol = TOL[x.dtype]
    if backend.name == "torch" and x.dtype == torch.float32:
        atol = 2e-5
    xr = x.detach().clone().requires_grad_(True)
    br = b.detach().clone().requires_grad_(True)
    out = bias_gelu(xr, br, approximate, backend=backend.name)
    xd = x.detach().double().cpu().requires_grad_(True)
    bd = b.detach().double().cpu().requires_grad_(True)
    ref = bias_gelu_torch(xd, bd, approximate)
    assert out.dtype == x.dtype and out.shape == x.shape and out.device == x.device
    torch.testing.assert_close(out.detach().double().cpu(), ref.detach(), rtol=rtol, atol=atol)
    gen = gen or torch.Generator().manual_seed(1)
    # The reference sees the incoming gradient as rounded to the output's dtype, as the kernel.
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(out.dtype)
    out.backward(g.to(x.device))
    ref.backward(g.double())
    assert xr.grad.dtype == x.dtype and br.grad.dtype == b.dtype
    torch.testing.assert_close(xr.grad.double().cpu(), xd.grad, rtol=rtol, atol=atol)
    # The bias gradient is a sum over rows: its absolute error grows with their number.
    rows = max(1, x.numel() // max(1, x.shape[-1]))
    torch.testing.assert_close(br.grad.double().cpu(), bd.grad, rtol=rtol,
                               atol=atol * rows ** 0.5 + (TOL[b.dtype][0] if b.dtype != x.dtype
                                                          else 0.0))


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_matches_float64_reference(bg_backend, dtype, approximate, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, b = make(gen, (3, 45, 130), dtype, bg_backend.device)
    check(x, b, approximate, bg_backend)


@pytest.mark.parametrize("shape", [(1, 1000), (7, 1), (1, 1), (2, 3, 1000), (1000,), (0, 64),
                                   (4, 0, 8)], ids=str)
def test_shapes(bg_backend, shape, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, b = make(gen, shape, torch.float32, bg_backend.device)
    check(x, b, "tanh", bg_backend)


def test_zero_rows_bias_grad_is_zero(bg_backend):
    x = torch.zeros(0, 5, device=bg_backend.device, requires_grad=True)
    b = torch.randn(5, device=bg_backend.device, requires_grad=True)
    out = bias_gelu(x, b, backend=bg_backend.name)
    assert out.shape == (0, 5)
    out.sum().backward()
    assert torch.equal(b.grad, torch.zeros(5, device=bg_backend.device))


def test_non_contiguous(bg_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, b = make(gen, (130, 40), torch.float32, bg_backend.device)
    check(x.t(), torch.randn(130, generator=gen).to(bg_backend.device), "tanh", bg_backend)
    check(x[::3, 1::2], b[1::2], "none", bg_backend)
    check(x, torch.randn(80, generator=gen).to(bg_backend.device)[::2], "tanh",
          bg_backend)  # a strided bias


def test_mixed_dtypes_autocast_layout(bg_backend, rng_seed):
    # Under autocast a GEMM's output is bfloat16 and its bias a float32 parameter.
    gen = torch.Generator().manual_seed(rng_seed)
    x, b = make(gen, (33, 70), torch.bfloat16, bg_backend.device, bias_dtype=torch.float32)
    check(x, b, "tanh", bg_backend)


def test_extreme_inputs(bg_backend):
    x = torch.tensor([[-1e4, -50.0, -10.0, -1e-6, 0.0, 1e-6, 10.0, 50.0, 1e4]],
                     dtype=torch.float32, device=bg_backend.device)
    b = torch.zeros(9, device=bg_backend.device)
    for approximate in ("tanh", "none"):
        check(x, b, approximate, bg_backend)
        out = bias_gelu(x, b, approximate, backend=bg_backend.name)
        assert torch.isfinite(out).all()


def test_deterministic(bg_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, b = make(gen, (300, 50), torch.float32, bg_backend.device)
    g = torch.randn(300, 50, generator=gen).to(bg_backend.device)
    grads = []
    for _ in range(2):
        xr, br = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        bias_gelu(xr, br, backend=bg_backend.name).backward(g)
        grads.append((xr.grad, br.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_bad_inputs():
    x, b = torch.randn(4, 3), torch.randn(3)
    with pytest.raises(TypeError, match="x"):
        bias_gelu(x.tolist(), b)
    with pytest.raises(TypeError, match="x"):
        bias_gelu(x.long(), b)
    with pytest.raises(TypeError, match="bias"):
        bias_gelu(x, b.int())
    with pytest.raises(ValueError, match="bias"):
        bias_gelu(x, torch.randn(4))
    with pytest.raises(ValueError, match="bias"):
        bias_gelu(x, torch.randn(1, 3))
    with pytest.raises(ValueError, match="x"):
        bias_gelu(torch.tensor(1.0), torch.randn(1))
    with pytest.raises(ValueError, match="approximate"):
        bias_gelu(x, b, "erf")
    with pytest.raises(ValueError, match="meta"):
        bias_gelu(x.to("meta"), b)
    with pytest.raises(ValueError, match="bias.*meta"):
        bias_gelu(x, b.to("meta"))
    with pytest.raises(ValueError, match="backend"):
        bias_gelu(x, b, backend="native")


def test_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(8, 3))
        b = mode.from_tensor(torch.randn(3))
        assert torch.ops.mlperf_fast.bias_gelu_triton(x, b, "tanh").shape == (8, 3)
        dx, db = torch.ops.mlperf_fast.bias_gelu_triton_backward(x, x, b, "tanh")
        assert dx.shape == (8, 3) and db.shape == (3,)


@pytest.mark.cuda
def test_mixed_devices_rejected():
    with pytest.raises(ValueError, match="bias"):
        bias_gelu(torch.randn(3, 4, device="cuda"), torch.zeros(4))


def test_compile_fullgraph_forward_and_backward(bg_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    x, b = make(gen, (6, 9), torch.float32, bg_backend.device)
    torch._dynamo.reset()
    fn = torch.compile(lambda x, b: bias_gelu(x, b, backend=bg_backend.name).sum(),
                       fullgraph=True, backend="aot_eager", dynamic=False)
    xr, br = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    fn(xr, br).backward()
    xe, be = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    bias_gelu(xe, be, backend=bg_backend.name).sum().backward()
    torch.testing.assert_close(xr.grad, xe.grad)
    torch.testing.assert_close(br.grad, be.grad)
