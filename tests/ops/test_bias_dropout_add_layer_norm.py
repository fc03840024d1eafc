"""bias_dropout_add_layer_norm, forward and the five gradients.

Without dropout (p = 0 or training=False) every backend is checked against the formula in
float64; with dropout the Triton kernels are checked against the formula given the mask they
draw (read back through ``dropout_keep``, and independently recovered from an output), and the
mask's statistics (kept fraction, per-element independence across rows and seeds) and
determinism for a seed are checked.

Tolerances: float32 sums rows of up to 1000 in float32 (mean, variance, the backward's two row
means): 2e-5 relative and absolute for O(1) outputs; the weight, LayerNorm-bias and bias
gradients sum over rows, their absolute error growing as the square root of the rows.
float16/bfloat16 inputs are computed in float32 and rounded once: 2e-3 / 1e-2 relative.
float64: 1e-10.
"""
from __future__ import annotations

import math

import pytest
import torch

from mlperf_fast.ops.bias_dropout_add_layer_norm import (
    MAX_H,
    bias_dropout_add_layer_norm,
    bias_dropout_add_layer_norm_masked,
    bias_dropout_add_layer_norm_torch,
    dropout_keep,
)

TOL = {torch.float32: (2e-5, 2e-5), torch.float64: (1e-10, 1e-10),
       torch.float16: (2e-3, 2e-3), torch.bfloat16: (1e-2, 1e-2)}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
NAMES = ("x", "bias", "residual", "weight", "ln_bias")
EPS = 1e-12  # BERT's


@pytest.fixture
def ln_backend(backend):
    if backend.name == "native":
        pytest.skip("bias_dropout_add_layer_norm has Triton and torch backends")
    return backend


def make(gen, shape, dtype, device, param_dtype=None, residual_dtype=None):
    H = shape[-1]
    t = {"x": torch.randn(shape, generator=gen, dtype=torch.float64) * 2,
         "bias": torch.randn(H, generator=gen, dtype=torch.float64),
         "residual": torch.randn(shape, generator=gen, dtype=torch.float64),
         "weight": 1 + 0.5 * torch.randn(H, generator=gen, dtype=torch.float64),
         "ln_bias": torch.randn(H, generator=gen, dtype=torch.float64)}
    dtypes = {"x": dtype, "residual": residual_dtype or dtype}
    return {k: v.to(device, dtypes.get(k, param_dtype or dtype)) for k, v in t.items()}


def _leaves(t, device=None, dtype=None):
    return {k: v.detach().to(device or v.device, dtype or v.dtype).clone().requires_grad_(True)
            for k, v in t.items()}


def check(t, backend, p=0.0, training=False, eps=EPS, seed=None, keep=None, grad_scale=1.0):
    """The op against the float64 formula (given the mask ``keep`` where dropout applies);
    ``grad_scale`` widens the gradients' absolute tolerance."""
    x = t["x"]
    rtol, atol = TOL[x.dtype]
    ours = _leaves(t)
    out = bias_dropout_add_layer_norm(*(ours[k] for k in NAMES), p, training, eps, seed,
                                      backend=backend.name)
    ref_in = _leaves(t, "cpu", torch.float64)
    if keep is None:
        ref = bias_dropout_add_layer_norm_torch(*(ref_in[k] for k in NAMES), p, False, eps)
    else:
        ref = bias_dropout_add_layer_norm_masked(*(ref_in[k] for k in NAMES), p, eps,
                                                 keep.cpu())
    assert out.dtype == x.dtype and out.shape == x.shape and out.device == x.device
    torch.testing.assert_close(out.detach().double().cpu(), ref.detach(), rtol=rtol, atol=atol)
    # The reference sees the incoming gradient as rounded to the output's dtype, as the kernel.
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64).to(out.dtype)
    out.backward(g.to(x.device))
    ref.backward(g.double())
    rows = math.prod(x.shape[:-1])
    for name in NAMES:
        got, want = ours[name].grad, ref_in[name].grad
        assert got.dtype == t[name].dtype, name
        summed = name in ("bias", "weight", "ln_bias")
        tol = max(TOL[x.dtype][1], TOL[t[name].dtype][1]) * grad_scale
        torch.testing.assert_close(got.double().cpu(), want, rtol=max(rtol, TOL[t[name].dtype][0]),
                                   atol=tol * (max(1, rows) ** 0.5 if summed else 1),
                                   msg=lambda m, n=name: f"grad of {n}: {m}")
    return out


@pytest.mark.parametrize("p,training", [(0.0, True), (0.1, False)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_matches_float64_reference_without_dropout(ln_backend, dtype, p, training, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    check(make(gen, (3, 20, 130), dtype, ln_backend.device), ln_backend, p, training)


@pytest.mark.parametrize("shape", [(1, 1000), (5, 1), (1, 1), (2, 3, 1000), (1000,), (0, 64),
                                   (4, 0, 8), (1100, 6)], ids=str)
def test_shapes(ln_backend, shape, rng_seed):
    # (1100, 6): more rows than the backward has programs, so each walks several.
    gen = torch.Generator().manual_seed(rng_seed)
    # H = 1: every row is constant, so rstd = 1 / sqrt(eps) = 316 multiplies whatever rounding
    # s - mean carries; PyTorch's CPU LayerNorm leaves an ulp there (the Triton kernel none).
    scale = 1 / math.sqrt(1e-5) if shape[-1] == 1 and ln_backend.name == "torch" else 1.0
    check(make(gen, shape, torch.float32, ln_backend.device), ln_backend, eps=1e-5,
          grad_scale=scale)


def test_non_contiguous(ln_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    t = make(gen, (90, 40), torch.float32, ln_backend.device)
    strided = {"x": t["x"].t(), "residual": t["residual"].t(),
               **{k: torch.randn(180, generator=gen).to(ln_backend.device)[::2]
                  for k in ("bias", "weight", "ln_bias")}}
    check(strided, ln_backend, eps=1e-5)
    check({k: (v[::3, 1::2] if v.dim() == 2 else v[1::2]) for k, v in t.items()}, ln_backend,
          eps=1e-5)


def test_mixed_dtypes_autocast_layout(ln_backend, rng_seed):
    # Under autocast the GEMM's output and the residual are bfloat16, the parameters float32.
    gen = torch.Generator().manual_seed(rng_seed)
    check(make(gen, (33, 70), torch.bfloat16, ln_backend.device, param_dtype=torch.float32),
          ln_backend)
    check(make(gen, (9, 70), torch.float16, ln_backend.device, param_dtype=torch.float32,
               residual_dtype=torch.float32), ln_backend, eps=1e-5)


def test_constant_rows(ln_backend):
    # Zero variance: rstd = 1 / sqrt(eps), the output is ln_bias, the gradients finite.
    t = {"x": torch.ones(4, 16), "bias": torch.zeros(16), "residual": torch.zeros(4, 16),
         "weight": torch.ones(16), "ln_bias": torch.linspace(-1, 1, 16)}
    t = {k: v.to(ln_backend.device) for k, v in t.items()}
    out = check(t, ln_backend, eps=1e-5)
    torch.testing.assert_close(out, t["ln_bias"].expand(4, 16))


# -------------------------------------------------------------------------- dropout (Triton)

@pytest.fixture
def triton_backend(ln_backend):
    if ln_backend.name != "triton":
        pytest.skip("the fused mask is the Triton kernels'; the torch backend uses F.dropout")
    return ln_backend


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16],
                         ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_matches_the_formula_with_the_kernels_mask(triton_backend, dtype, p, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    t = make(gen, (3, 7, 130), dtype, triton_backend.device)
    keep = dropout_keep(rng_seed, t["x"].shape, p, triton_backend.device)
    # Forward and backward both against the formula with this mask: had the backward drawn
    # another mask, the gradients of x and bias would differ where the two masks do.
    check(t, triton_backend, p, True, seed=rng_seed, keep=keep)


def test_mask_recovered_from_the_output(triton_backend, rng_seed):
    # residual = 0, weight = 1, ln_bias = 0 and x + bias in [1, 2]: a dropped element becomes
    # the row's minimum, (0 - mean) rstd, and every kept one lies above it.
    gen = torch.Generator().manual_seed(rng_seed)
    d, H = triton_backend.device, 257
    x = (1 + torch.rand(40, H, generator=gen)).to(d)
    zeros = torch.zeros(H, device=d)
    out = bias_dropout_add_layer_norm(x, zeros, torch.zeros_like(x), zeros + 1, zeros, 0.25,
                                      True, 1e-5, rng_seed, backend="triton")
    low = out.min(dim=-1, keepdim=True).values
    recovered = out > low + 1e-4
    assert torch.equal(recovered, dropout_keep(rng_seed, (40, H), 0.25, d))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mask_statistics(triton_backend, p, rng_seed):
    d = triton_backend.device
    shape = (64, 1000)
    keep = dropout_keep(rng_seed, shape, p, d).cpu()
    n = keep.numel()
    frac = keep.float().mean().item()
    assert abs(frac - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n), frac
    # Rows are not copies of one another, and neighbouring elements are independent: the
    # fraction of equal neighbours is p^2 + (1 - p)^2 within sampling error.
    assert not torch.equal(keep[0], keep[1])
    same = (keep[:, 1:] == keep[:, :-1]).float().mean().item()
    q = p * p + (1 - p) * (1 - p)
    assert abs(same - q) < 5 * math.sqrt(q * (1 - q) / n), same
    other = dropout_keep(rng_seed ^ 1, shape, p, d).cpu()
    agree = (keep == other).float().mean().item()
    assert abs(agree - q) < 5 * math.sqrt(q * (1 - q) / n), agree


def test_dropout_scaling(triton_backend, rng_seed):
    # Kept elements are scaled by 1 / (1 - p): with residual = 0 and x + bias = 1 the pre-norm
    # row is 1 / (1 - p) where kept and 0 where dropped; its mean is the kept fraction over
    # (1 - p), so LayerNorm's output on kept elements is (1/(1-p) - mean) rstd.
    d, p, H = triton_backend.device, 0.3, 999
    x = torch.ones(8, H, device=d)
    zeros = torch.zeros(H, device=d)
    out = bias_dropout_add_layer_norm(x, zeros, torch.zeros_like(x), zeros + 1, zeros, p, True,
                                      1e-6, rng_seed, backend="triton").cpu().double()
    keep = dropout_keep(rng_seed, (8, H), p, d).cpu()
    s = keep.double() / (1 - p)
    want = (s - s.mean(-1, keepdim=True)) / torch.sqrt(s.var(-1, unbiased=False, keepdim=True)
                                                       + 1e-6)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_deterministic_for_a_seed(triton_backend, rng_seed):
    # On a GPU, more rows than the backward has programs (each walks several, in order); the
    # interpreter runs a smaller case (test_shapes covers the multi-row walk there).
    rows = 2000 if triton_backend.device.type == "cuda" else 120
    gen = torch.Generator().manual_seed(rng_seed)
    t = make(gen, (rows, 24), torch.float32, triton_backend.device)
    g = torch.randn(rows, 24, generator=gen).to(triton_backend.device)
    runs = []
    for seed in (rng_seed, rng_seed, torch.tensor([rng_seed], device=triton_backend.device)):
        leaves = _leaves(t)
        out = bias_dropout_add_layer_norm(*leaves.values(), 0.1, True, EPS, seed,
                                          backend="triton")
        out.backward(g)
        runs.append([out.detach()] + [leaves[k].grad for k in NAMES])
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b)
    other = bias_dropout_add_layer_norm(*t.values(), 0.1, True, EPS, rng_seed + 1,
                                        backend="triton")
    assert not torch.equal(other, runs[0][0])


def test_seed_none_follows_torch_manual_seed(triton_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    t = make(gen, (5, 33), torch.float32, triton_backend.device)
    outs = []
    for _ in range(2):
        torch.manual_seed(rng_seed)
        outs.append(bias_dropout_add_layer_norm(*t.values(), 0.5, True, EPS, backend="triton"))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], bias_dropout_add_layer_norm(*t.values(), 0.5, True, EPS,
                                                                backend="triton"))


# -------------------------------------------------------------------------- arguments


def _args(**over):
    t = {"x": torch.randn(4, 8), "bias": torch.randn(8), "residual": torch.randn(4, 8),
         "weight": torch.randn(8), "ln_bias": torch.randn(8), "p": 0.1, "training": True,
         "eps": 1e-5}
    t.update(over)
    return t


@pytest.mark.parametrize("over,error,match", [
    (dict(x=[[1.0]]), TypeError, "x"),
    (dict(x=torch.ones(4, 8, dtype=torch.int64)), TypeError, "x"),
    (dict(x=torch.tensor(1.0)), ValueError, "x"),
    (dict(residual=torch.randn(4, 7)), ValueError, "residual"),
    (dict(residual=torch.randn(8)), ValueError, "residual"),
    (dict(bias=torch.randn(7)), ValueError, "bias"),
    (dict(weight=torch.randn(1, 8)), ValueError, "weight"),
    (dict(ln_bias=torch.ones(8, dtype=torch.int32)), TypeError, "ln_bias"),
    (dict(p=1.0), ValueError, "p"),
    (dict(p=-0.1), ValueError, "p"),
    (dict(p=math.nan), ValueError, "p"),
    (dict(p=torch.tensor(0.1)), TypeError, "p"),
    (dict(training=1), TypeError, "training"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=math.nan), ValueError, "eps"),
    (dict(eps=math.inf), ValueError, "eps"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**63), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed=torch.tensor([1.0])), TypeError, "seed"),
    (dict(seed=torch.tensor([1, 2])), ValueError, "seed"),
    (dict(x=torch.randn(4, 8, device="meta")), ValueError, "meta"),
    (dict(weight=torch.randn(8, device="meta")), ValueError, "weight"),
    (dict(backend="native"), ValueError, "backend"),
], ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_bad_inputs(over, error, match):
    with pytest.raises(error, match=match):
        bias_dropout_add_layer_norm(**_args(**over))


def test_auto_is_torch_and_wide_rows_are_refused_by_triton():
    from mlperf_fast.ops._library import OPS

    op = OPS["bias_dropout_add_layer_norm"]
    # auto stays on torch until the Triton kernel is measured faster on a GPU
    assert op.order("cuda", MAX_H) == op.order("cuda", MAX_H + 1) == ("torch",)
    with pytest.raises(ValueError, match="torch"):
        bias_dropout_add_layer_norm(**_args(x=torch.randn(1, MAX_H + 1),
                                            residual=torch.randn(1, MAX_H + 1),
                                            bias=torch.randn(MAX_H + 1),
                                            weight=torch.randn(MAX_H + 1),
                                            ln_bias=torch.randn(MAX_H + 1), backend="triton"))


def test_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(2, 3, 8))
        v = mode.from_tensor(torch.randn(8))
        seed = mode.from_tensor(torch.tensor([3]))
        out, mean, rstd = torch.ops.mlperf_fast.bias_dropout_add_layer_norm_triton(
            x, v, x, v, v, 0.1, 1e-5, seed)
        assert out.shape == (2, 3, 8) and mean.shape == rstd.shape == (6,)
        assert mean.dtype == torch.float32
        grads = torch.ops.mlperf_fast.bias_dropout_add_layer_norm_triton_backward(
            x, x, v, x, v, v, mean, rstd, 0.1, seed)
        assert [g.shape for g in grads] == [(2, 3, 8), (8,), (2, 3, 8), (8,), (8,)]


def test_compile_fullgraph_forward_and_backward(ln_backend, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    t = make(gen, (6, 9), torch.float32, ln_backend.device)
    p = 0.0 if ln_backend.name == "torch" else 0.2  # torch's dropout draws differ when traced

    def fn(*args):
        return bias_dropout_add_layer_norm(*args, p, True, 1e-5, 7, backend=ln_backend.name)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager", dynamic=False)
    g = torch.randn(6, 9, generator=gen).to(ln_backend.device)
    a, b = _leaves(t), _leaves(t)
    compiled(*a.values()).backward(g)
    fn(*b.values()).backward(g)
    for name in NAMES:
        torch.testing.assert_close(a[name].grad, b[name].grad)


@pytest.mark.cuda
def test_mixed_devices_rejected():
    with pytest.raises(ValueError, match="residual"):
        bias_dropout_add_layer_norm(**_args(x=torch.randn(4, 8, device="cuda")))


@pytest.mark.parametrize("grad", [False, True])
def test_opcheck_without_dropout(triton_backend, grad):
    # test_library checks the op with dropout and a seed; this, the p = 0 form (no seed).
    d = triton_backend.device
    x, r = torch.randn(3, 5, device=d), torch.randn(3, 5, device=d)
    b, w, lb = (torch.randn(5, device=d).requires_grad_(grad) for _ in range(3))
    torch.library.opcheck(torch.ops.mlperf_fast.bias_dropout_add_layer_norm_triton.default,
                          (x.requires_grad_(grad), b, r.requires_grad_(grad), w, lb, 0.0, 1e-5,
                           None))
