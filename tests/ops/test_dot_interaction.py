"""dot_interaction against the reference's bmm formulation in float64, forward and backward.

Tolerances: float32 dot products of D <= 128 terms of size ~1 (values up to ~40) are accumulated
in float32: 1e-5 relative with a 1e-4 absolute floor. bfloat16 / float16 inputs are exact in
float32; each output and gradient is one rounding to the dtype (2^-8 / 2^-11 relative) after a
float32 sum, so the bound is 1e-2 / 2e-3 relative with an absolute floor scaled to the values.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.dot_interaction import dot_interaction, output_width

TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-12, 1e-12),
       torch.bfloat16: (1e-2, 5e-2), torch.float16: (2e-3, 1e-2)}
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def skip_triton(backend):
    if backend.name == "triton":
        pytest.skip("dot_interaction has no Triton kernel")


def reference(dense, emb):
    """MLCommons DLRM's interact_features (dot, without self-interaction), in float64."""
    x, ly = dense.double(), emb.double()
    B, d = x.shape
    T = torch.cat([x.unsqueeze(1), ly], dim=1).view(B, -1, d)
    Z = torch.bmm(T, torch.transpose(T, 1, 2))
    n = T.shape[1]
    li = torch.tensor([i for i in range(n) for j in range(i)])
    lj = torch.tensor([j for i in range(n) for j in range(i)])
    return torch.cat([x, Z[:, li, lj]], dim=1)


def check(backend, B, F, D, dtype, gen):
    dense0 = torch.randn(B, D, generator=gen).to(dtype)
    emb0 = torch.randn(B, F, D, generator=gen).to(dtype)
    dense = dense0.clone().to(backend.device).requires_grad_(True)
    emb = emb0.clone().to(backend.device).requires_grad_(True)
    out = dot_interaction(dense, emb, backend=backend.name)
    assert out.shape == (B, output_width(F, D)) and out.dtype == dtype
    d_ref = dense0.double().requires_grad_(True)
    e_ref = emb0.double().requires_grad_(True)
    expected = reference(d_ref, e_ref)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out.detach().cpu().double(), expected.detach(), rtol=rtol, atol=atol)
    grad = torch.randn(out.shape, generator=gen).to(dtype)
    out.backward(grad.to(backend.device))
    expected.backward(grad.double())
    # Gradients sum up to 2F products of size ~1: the absolute floor grows with sqrt(F).
    scale = max(1.0, (2 * F) ** 0.5)
    torch.testing.assert_close(dense.grad.cpu().double(), d_ref.grad, rtol=rtol, atol=atol * scale)
    torch.testing.assert_close(emb.grad.cpu().double(), e_ref.grad, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_dlrm_shape(backend, dtype, rng_seed):
    skip_triton(backend)
    check(backend, 64, 26, 128, dtype, torch.Generator().manual_seed(rng_seed))


@pytest.mark.parametrize("F,D", [(1, 4), (2, 13), (26, 16), (7, 1), (63, 32), (26, 600)])
def test_shapes(backend, F, D, rng_seed):
    # Odd dims (not a multiple of 4), one embedding, the largest F the kernel holds, and a width
    # beyond one block's shared memory (served by the batched-matmul path).
    skip_triton(backend)
    check(backend, 9, F, D, torch.float32, torch.Generator().manual_seed(rng_seed))


def test_list_input_and_empty_batch(backend, rng_seed):
    skip_triton(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    d = backend.device
    dense = torch.randn(3, 8, generator=gen).to(d)
    embs = [torch.randn(3, 8, generator=gen).to(d) for _ in range(4)]
    out = dot_interaction(dense, embs, backend=backend.name)
    torch.testing.assert_close(out.cpu().double(),
                               reference(dense.cpu(), torch.stack(embs, 1).cpu()),
                               rtol=1e-5, atol=1e-5)
    empty = dot_interaction(dense[:0], torch.stack(embs, 1)[:0], backend=backend.name)
    assert empty.shape == (0, output_width(4, 8))


def test_non_contiguous(backend, rng_seed):
    skip_triton(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    d = backend.device
    flat = torch.randn(6, 5 * 16, generator=gen).to(d)  # a [B, F * D] embedding output
    dense = torch.randn(16, 6, generator=gen).to(d).t()
    emb = flat.view(6, 5, 16)
    out = dot_interaction(dense, emb[:, 1:], backend=backend.name)
    torch.testing.assert_close(out.cpu().double(), reference(dense.cpu(), emb[:, 1:].cpu()),
                               rtol=1e-5, atol=1e-4)


def test_bad_inputs():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="embeddings"):
        dot_interaction(x, torch.randn(4, 3, 7))
    with pytest.raises(ValueError, match="dense"):
        dot_interaction(torch.randn(4, 8, 1), torch.randn(4, 3, 8))
    with pytest.raises(TypeError, match="dtype"):
        dot_interaction(x, torch.randn(4, 3, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        dot_interaction(x.long(), torch.randn(4, 3, 8).long())
    with pytest.raises(ValueError, match="shape"):
        dot_interaction(x, [torch.randn(4, 7)])
    with pytest.raises(ValueError, match="backend"):
        dot_interaction(x, torch.randn(4, 3, 8), backend="cuDNN")


@pytest.mark.cuda
def test_cuda_graph_capture(rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    dense = torch.randn(32, 128, generator=gen).cuda()
    emb = torch.randn(32, 26, 128, generator=gen).cuda()
    dot_interaction(dense, emb)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = dot_interaction(dense, emb)
    emb.mul_(-1)
    graph.replay()
    torch.testing.assert_close(out.cpu().double(), reference(dense.cpu(), emb.cpu()), rtol=1e-5,
                               atol=1e-4)


def test_fake_tensor_shapes():
    if not torch.ops.mlperf_fast.dot_interaction_forward.default.has_kernel_for_dispatch_key("CPU"):
        pytest.skip("extension not built")
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = dot_interaction(torch.empty(8, 128), torch.empty(8, 26, 128), backend="native")
        assert out.shape == (8, 128 + 351)
