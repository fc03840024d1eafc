"""transducer_joint_loss against the unfused composition: relu(f + g) -> dropout -> Linear ->
the float64 loop-and-autograd RNN-T oracle.

Tolerances: float64 inputs on the torch path match to rounding (1e-10). float32 inputs go through
float32 GEMMs and float32 recursions: 2e-5 relative on the loss and 2e-4 absolute on gradients
(the weight's and bias's gradients sum B*T*(U+1) ~ 100 float32 terms of size ~1 here; observed
errors reach 5e-5). bfloat16: the joint and logits are rounded to
bfloat16 (2^-8 relative), so 2e-2 relative on the loss and 5e-2 relative on gradient norms.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

from mlperf_fast.ops import transducer_joint_loss

sys.path.insert(0, os.path.dirname(__file__))
from rnnt_reference import rnnt_costs_reference

BACKENDS = [
    pytest.param(("torch", "cpu", torch.float64), id="torch-cpu-fp64"),
    pytest.param(("torch", "cpu", torch.float32), id="torch-cpu-fp32"),
    pytest.param(("triton", "cpu", torch.float32), id="triton-interpreter-fp32", marks=pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter needs TRITON_INTERPRET=1")),
    pytest.param(("triton", "cuda", torch.float32), id="triton-cuda-fp32", marks=pytest.mark.cuda),
]
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 2e-4)}


def make(gen, bsz, t_max, u_max, hid, classes, t_lens=None, u_lens=None):
    f = torch.randn(bsz, t_max, hid, generator=gen, dtype=torch.float64)
    g = torch.randn(bsz, u_max + 1, hid, generator=gen, dtype=torch.float64)
    w = torch.randn(classes, hid, generator=gen, dtype=torch.float64) / hid**0.5 * 2
    b = torch.randn(classes, generator=gen, dtype=torch.float64) * 0.1
    targets = torch.randint(0, classes - 1, (bsz, u_max), generator=gen, dtype=torch.int32)
    if t_lens is None:
        t_lens = torch.randint(1, t_max + 1, (bsz,), generator=gen)
        t_lens[0] = t_max
    if u_lens is None:
        u_lens = torch.randint(0, u_max + 1, (bsz,), generator=gen)
        u_lens[0] = u_max
    return (f, g, w, b), targets, torch.as_tensor(t_lens, dtype=torch.int32), \
        torch.as_tensor(u_lens, dtype=torch.int32)


def reference(params, targets, t_lens, u_lens, reduction, weight, dropout=0.0, seed=None):
    x = [p.detach().clone().requires_grad_() for p in params]
    f, g, w, b = x
    tc, uc = int(t_lens.max()), int(u_lens.max()) + 1
    z = F.relu(f[:, :tc, None] + g[:, None, :uc])
    if dropout > 0:
        torch.manual_seed(seed)
        z = F.dropout(z.float(), dropout, training=True).double()
    logits = F.linear(z, w, b)
    costs = rnnt_costs_reference(logits, targets, t_lens, u_lens)
    loss = {"none": costs, "mean": costs.mean(), "sum": costs.sum()}[reduction]
    ((loss * weight).sum() if reduction == "none" else loss).backward()
    return loss.detach(), [p.grad for p in x]


def ours(params, targets, t_lens, u_lens, reduction, weight, backend, device, dtype, **kw):
    x = [p.detach().to(device, dtype).requires_grad_() for p in params]
    loss = transducer_joint_loss(*x, targets.to(device), t_lens.to(device), u_lens.to(device),
                                 reduction=reduction, backend=backend, **kw)
    ((loss * weight.to(device, loss.dtype)).sum() if reduction == "none" else loss).backward()
    return loss.detach().cpu(), [p.grad.cpu() for p in x]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("group_bytes", [1, 1 << 30], ids=["one-per-group", "one-group"])
def test_parity(joint_backend, reduction, group_bytes, rng_seed):
    backend, device, dtype = joint_backend
    gen = torch.Generator().manual_seed(rng_seed)
    params, targets, t_lens, u_lens = make(gen, 3, 6, 4, 8, 9)
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    ref_loss, ref_grads = reference(params, targets, t_lens, u_lens, reduction, weight)
    loss, grads = ours(params, targets, t_lens, u_lens, reduction, weight, backend, device, dtype,
                       group_bytes=group_bytes)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(loss.double(), ref_loss, rtol=rtol, atol=atol)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=0, atol=atol)


@pytest.fixture(params=BACKENDS)
def joint_backend(request):
    return request.param


@pytest.mark.parametrize("t_lens,u_lens", [([1], [0]), ([1, 4], [3, 0]), ([4, 4], [0, 0]),
                                           ([4, 4], [3, 3])],
                         ids=["T1-U0", "T1", "all-blank", "maximal"])
def test_edge_lengths(joint_backend, t_lens, u_lens, rng_seed):
    backend, device, dtype = joint_backend
    gen = torch.Generator().manual_seed(rng_seed)
    params, targets, tl_, ul = make(gen, len(t_lens), 4, 3, 8, 7, t_lens, u_lens)
    weight = torch.ones(len(t_lens), dtype=torch.float64)
    ref_loss, ref_grads = reference(params, targets, tl_, ul, "sum", weight)
    loss, grads = ours(params, targets, tl_, ul, "sum", weight, backend, device, dtype,
                       group_bytes=1)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(loss.double(), ref_loss, rtol=rtol, atol=atol)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=atol)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter needs TRITON_INTERPRET=1"))])
def test_dropout_matches_functional(backend, rng_seed):
    # One group, so the op's single F.dropout call draws the same mask as the reference's.
    gen = torch.Generator().manual_seed(rng_seed)
    params, targets, t_lens, u_lens = make(gen, 3, 5, 4, 8, 9)
    weight = torch.ones(3, dtype=torch.float64)
    ref_loss, ref_grads = reference(params, targets, t_lens, u_lens, "sum", weight, 0.3, rng_seed)
    torch.manual_seed(rng_seed)
    loss, grads = ours(params, targets, t_lens, u_lens, "sum", weight, backend, "cpu",
                       torch.float32, dropout=0.3)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-5, atol=5e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-4)


def test_no_bias_and_frozen_inputs(rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    (f, g, w, _), targets, t_lens, u_lens = make(gen, 2, 4, 3, 8, 7)
    fx = f.clone().requires_grad_()
    loss = transducer_joint_loss(fx, g, w, None, targets, t_lens, u_lens, backend="torch")
    loss.backward()
    fr = f.clone().requires_grad_()
    logits = F.linear(F.relu(fr[:, :, None] + g[:, None]), w)
    rnnt_costs_reference(logits, targets, t_lens, u_lens).mean().backward()
    torch.testing.assert_close(fx.grad, fr.grad, rtol=0, atol=1e-10)
    with torch.no_grad():
        again = transducer_joint_loss(f, g, w, None, targets, t_lens, u_lens, backend="torch")
    torch.testing.assert_close(again, loss.detach(), rtol=0, atol=1e-12)


def test_bfloat16_close_to_float64(rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    params, targets, t_lens, u_lens = make(gen, 2, 5, 3, 16, 12)
    weight = torch.ones(2, dtype=torch.float64)
    params16 = [p.to(torch.bfloat16).double() for p in params]
    ref_loss, ref_grads = reference(params16, targets, t_lens, u_lens, "sum", weight)
    loss, grads = ours(params, targets, t_lens, u_lens, "sum", weight, "torch", "cpu",
                       torch.bfloat16)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-2, atol=0)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.bfloat16
        assert (got.double() - want).norm() <= 5e-2 * want.norm()


@pytest.mark.parametrize("mutate,exc,match", [
    (lambda a: a.update(f=a["f"][0]), ValueError, "f must be"),
    (lambda a: a.update(g=a["g"][:, :, :4]), ValueError, r"g \(2, 4, 4\) do not match"),
    (lambda a: a.update(weight=a["weight"].float()), TypeError, "weight has dtype"),
    (lambda a: a.update(bias=a["bias"][:3]), ValueError, "bias must be"),
    (lambda a: a.update(f=a["f"].int()), TypeError, "f has dtype"),
    (lambda a: a.update(dropout=1.0), ValueError, "dropout"),
    (lambda a: a.update(activation="tanh"), ValueError, "activation"),
    (lambda a: a.update(f_lengths=torch.tensor([9, 1], dtype=torch.int32)), ValueError,
     r"f_lengths\[0\] = 9"),
    (lambda a: a.update(target_lengths=torch.tensor([4, 1], dtype=torch.int32)), ValueError,
     "targets longer"),
    (lambda a: a.update(blank=7), ValueError, "blank=7"),
    (lambda a: a.update(blank=1.5), TypeError, "blank must be an int"),
    (lambda a: a.update(weight=a["weight"].to("meta")), ValueError, "weight is on the meta"),
    (lambda a: a.update(bias=a["bias"].float()), TypeError, "bias has dtype"),
], ids=["f-ndim", "hidden", "dtype-mix", "bias", "f-dtype", "dropout", "activation",
        "T-past-tensor", "U-too-long", "blank", "blank-float", "meta-weight", "bias-dtype"])
def test_bad_input(mutate, exc, match):
    gen = torch.Generator().manual_seed(0)
    (f, g, w, b), targets, t_lens, u_lens = make(gen, 2, 4, 3, 8, 7, [4, 2], [3, 1])
    args = dict(f=f, g=g, weight=w, bias=b, targets=targets, f_lengths=t_lens,
                target_lengths=u_lens)
    mutate(args)
    with pytest.raises(exc, match=match):
        transducer_joint_loss(**args)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,fp32_gemm", [(torch.float32, "tf32x3"), (torch.float32, "cublas"),
                                             (torch.float32, "tf32x3_triton"),
                                             (torch.bfloat16, "auto")],
                         ids=["fp32-tf32x3", "fp32-cublas", "fp32-tf32x3-triton", "bf16"])
def test_cuda_matches_unfused(dtype, fp32_gemm, rng_seed):
    # Against the materialized torch joint + this package's rnnt_loss on the same GPU, at a
    # shape with many groups.
    from mlperf_fast.ops import rnnt_loss

    gen = torch.Generator().manual_seed(rng_seed)
    params, targets, t_lens, u_lens = make(gen, 6, 40, 12, 64, 129)
    dev = "cuda"
    a = [p.to(dev, dtype).requires_grad_() for p in params]
    b = [p.to(dev, dtype).requires_grad_() for p in params]
    args = (targets.to(dev), t_lens.to(dev), u_lens.to(dev))
    ours_loss = transducer_joint_loss(*a, *args, group_bytes=40 * 13 * 129 * 4 * 2,
                                      fp32_gemm=fp32_gemm)
    logits = F.linear(F.relu(b[0][:, :, None] + b[1][:, None]), b[2], b[3])
    ref_loss = rnnt_loss(logits, *args)
    ours_loss.backward()
    ref_loss.backward()
    # float32 against a float32 reference, both with rounding: 3xTF32 in Triton was seen at
    # 2.5e-5 of the gradient's norm (cuBLAS float32 and cuBLAS 3xTF32 below 2e-5)
    tol = 5e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ours_loss, ref_loss, rtol=tol, atol=tol)
    for x, y in zip(a, b):
        assert (x.grad.float() - y.grad.float()).norm() <= tol * y.grad.float().norm() + 1e-6


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("splits", [1, 3])
def test_tf32x3_matmul(device, splits, rng_seed):
    # float32-level error: |error| <= ~1e-6 * sum |a||b| (the interpreter computes in float32).
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs Triton's interpreter")
    from mlperf_fast.kernels.transducer_joint_loss import matmul

    gen = torch.Generator().manual_seed(rng_seed)
    a = torch.randn(300, 70, generator=gen)
    b = torch.randn(130, 70, generator=gen)  # used as b.t(): a strided operand
    bias = torch.randn(130, generator=gen)
    ref = a.double() @ b.double().t() + bias.double()
    bound = 1e-6 * (a.double().abs() @ b.double().abs().t()) + 1e-6
    got = matmul(a.to(device), b.to(device).t(), bias.to(device), splits=splits).cpu().double()
    assert ((got - ref).abs() <= bound).all()
    got_t = matmul(a.to(device).t(), a.to(device), splits=splits).cpu().double()  # a^T a
    ref_t = a.double().t() @ a.double()
    assert ((got_t - ref_t).abs() <= 1e-6 * (a.double().abs().t() @ a.double().abs()) + 1e-6).all()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (3, 1367), (7, 4291)])
@pytest.mark.parametrize("lo_at", [1, 2])
def test_stack_tf32_kernel(device, shape, lo_at, rng_seed):
    # The one-pass Triton stacking gives the torch path's bits over odd sizes (one element, a
    # row longer than a block, a partial last block) and extreme values (inf, nan, -0.0,
    # denormals).
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs Triton's interpreter")
    from mlperf_fast.kernels.transducer_joint_loss import stack_tf32 as kernel_stack

    from mlperf_fast.ops.transducer_joint_loss import _TF32_HI_MASK

    gen = torch.Generator().manual_seed(rng_seed)
    n = shape[0] * shape[1]
    x = (torch.randn(n, generator=gen) * torch.logspace(-40, 38, n)).view(shape)
    if n > 8:
        x.view(-1)[:5] = torch.tensor([float("inf"), float("nan"), -0.0, 1e-40, -3.0e38])
    hi = (x.view(torch.int32) & _TF32_HI_MASK).view(torch.float32)
    parts = [hi, hi, hi]
    parts[lo_at] = x - hi
    want = torch.cat(parts, dim=1)
    got = kernel_stack(x.to(device), lo_at).cpu()
    assert got.shape == (shape[0], 3 * shape[1])
    hi_blocks = [k for k in range(3) if k != lo_at]
    got3, want3 = got.view(shape[0], 3, shape[1]), want.view(shape[0], 3, shape[1])
    assert torch.equal(got3[:, hi_blocks].contiguous().view(torch.int32),
                       want3[:, hi_blocks].contiguous().view(torch.int32))
    # The remainder of inf or nan is a nan whose bits may differ between devices.
    torch.testing.assert_close(got3[:, lo_at], want3[:, lo_at], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_mm_tf32x3(device, rng_seed):
    # The stacked 3xTF32 product: float32-level error against float64, strided operands, the
    # bias, an empty K; TF32 settings are as they were afterwards.
    from mlperf_fast.ops.transducer_joint_loss import HHL, HLH, mm_tf32x3, stack_tf32

    gen = torch.Generator().manual_seed(rng_seed)
    a = torch.randn(300, 70, generator=gen) * torch.logspace(-3, 3, 70)
    b = torch.randn(130, 70, generator=gen)
    bias = torch.randn(130, generator=gen)
    for lo_at in (HHL, HLH):
        parts = stack_tf32(a.to(device), lo_at).cpu().view(300, 3, 70)
        hi, lo = parts[:, 0], parts[:, lo_at]
        assert torch.equal(hi + lo, a) and torch.equal(parts[:, 3 - lo_at], hi)
        assert ((hi.view(torch.int32) & 0x1FFF) == 0).all()
        assert (lo.abs() <= a.abs() * 2.0**-10).all()
    before = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision)
    got = mm_tf32x3(a.to(device), b.to(device).t(), bias.to(device)).cpu().double()
    assert (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision) == before
    ref = a.double() @ b.double().t() + bias.double()
    assert ((got - ref).abs() <= 2e-6 * (a.double().abs() @ b.double().abs().t()) + 1e-6).all()
    empty = mm_tf32x3(a[:, :0].to(device), b[:, :0].to(device).t())
    assert empty.shape == (300, 130) and not empty.any()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter needs TRITON_INTERPRET=1"))])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_fp32_gemm_tf32x3_parity(backend, reduction, rng_seed):
    # The op with fp32_gemm="tf32x3" on CPU (float32 GEMMs of the stacked operands; with
    # Triton, the loss kernel writes the stacked gradient) keeps float32 parity with the
    # float64 reference.
    gen = torch.Generator().manual_seed(rng_seed)
    params, targets, t_lens, u_lens = make(gen, 3, 6, 4, 8, 9)
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    ref_loss, ref_grads = reference(params, targets, t_lens, u_lens, reduction, weight)
    loss, grads = ours(params, targets, t_lens, u_lens, reduction, weight, backend, "cpu",
                       torch.float32, group_bytes=1, fp32_gemm="tf32x3")
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(loss.double(), ref_loss, rtol=rtol, atol=atol)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=atol)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("fp32_gemm", ["tf32x3", "cublas"])
def test_weight_gradient_split_over_rows(device, fp32_gemm, rng_seed):
    # The weight gradient cuts its long K (the lattice's rows) into bmm batches plus a rest;
    # with "tf32x3" its operands are stacked by rows, each row of dl and z becoming three.
    from mlperf_fast.ops.transducer_joint_loss import HHL, HLH, _gemms, stack_tf32

    gen = torch.Generator().manual_seed(rng_seed)
    dl = torch.randn(3 * 4096 + 77, 9, generator=gen)
    z = torch.randn(3 * 4096 + 77, 5, generator=gen)
    dl_op, z_op = dl.to(device), z.to(device)
    if fp32_gemm == "tf32x3":
        dl_op, z_op = stack_tf32(dl_op, HLH).view(-1, 9), stack_tf32(z_op, HHL).view(-1, 5)
    got = _gemms(fp32_gemm)[2](dl_op, z_op).cpu().double()
    ref = dl.double().t() @ z.double()
    assert ((got - ref).abs() <= 2e-6 * (dl.double().abs().t() @ z.double().abs()) + 1e-6).all()
