"""Table-batched embedding bags against torch.nn.EmbeddingBag per table, in float64.

Each case draws tables of different sizes and dims, random bag sizes (empty bags included) and
indices from one of three distributions: uniform, power-law (a few hot rows take most lookups,
as in click logs) and heavy duplicates (a handful of rows). Forward, dense gradient, per-sample
weight gradient, and the weights after the fused SGD and row-wise Adagrad updates are compared
with the same computation done with nn.EmbeddingBag and dense updates in float64.

Tolerances: float32 weights are accumulated in float32 over up to a few thousand terms of
size ~1 (bags of <= 20 rows; hot rows gather thousands of gradient rows). Summed in sequence,
n terms can drift by ~n * 6e-8 of the partial sums (3e-5 relative was seen for 120 terms in
torch's own CPU backward), so 1e-4 relative with an absolute floor of 1e-3 bounds the rounding
while a dropped or doubled term (~1) fails. float16 / bfloat16 outputs carry one rounding to the dtype (2^-11 / 2^-8 relative) on top
of float32 accumulation; updated half-precision weights one rounding of the new value.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlperf_fast.nn import TableBatchedEmbeddingBag
from mlperf_fast.ops.table_batched_embedding import (
    TableLayout,
    table_batched_embedding_bag,
    table_batched_embedding_bag_fused,
    tbe_backward_update_,
    validate,
)

TOL = {torch.float32: (1e-4, 1e-3), torch.float64: (1e-12, 1e-12),
       torch.float16: (2e-3, 4e-3), torch.bfloat16: (1e-2, 3e-2)}
DISTS = ["uniform", "powerlaw", "duplicates"]


def skip_triton(backend):
    """The Triton backend runs the forward in Triton and the backward natively; it runs where
    the interpreter or a GPU is there (the backend fixture's marks)."""


def skip_triton_backward_only(backend):
    if backend.name == "triton":
        pytest.skip("the Triton backend's backward is the native kernel, tested as native")


def draw_indices(gen, rows: int, count: int, dist: str) -> torch.Tensor:
    if count == 0 or rows == 0:
        return torch.zeros(count, dtype=torch.int64)
    if dist == "uniform":
        return torch.randint(0, rows, (count,), generator=gen)
    if dist == "powerlaw":
        # u^4 piles mass near 0: row 0 alone takes about 1/rows^(1/4) of the lookups.
        u = torch.rand(count, generator=gen, dtype=torch.float64)
        return (u.pow(4) * rows).long().clamp_(max=rows - 1)
    hot = torch.randint(0, rows, (min(3, rows),), generator=gen)
    return hot[torch.randint(0, hot.numel(), (count,), generator=gen)]


def make_case(gen, layout: TableLayout, B: int, max_bag: int, dist: str,
              index_dtype=torch.int64):
    lens = torch.randint(0, max_bag + 1, (layout.T * B,), generator=gen)
    lens[torch.rand(layout.T * B, generator=gen) < 0.1] = 0  # empty bags
    for t, r in enumerate(layout.rows):
        if r == 0:
            lens[t * B:(t + 1) * B] = 0
    offsets = torch.zeros(layout.T * B + 1, dtype=torch.int64)
    offsets[1:] = lens.cumsum(0)
    indices = torch.cat([draw_indices(gen, layout.rows[t], int(lens[t * B:(t + 1) * B].sum()), dist)
                         for t in range(layout.T)])
    return indices.to(index_dtype), offsets.to(index_dtype)


def reference_bags(layout: TableLayout, weights: torch.Tensor, mode: str):
    """nn.EmbeddingBag per table in float64, holding a copy of the tables."""
    bags = []
    for w in layout.split(weights.detach()):
        bag = nn.EmbeddingBag(w.shape[0], w.shape[1], mode=mode, dtype=torch.float64)
        with torch.no_grad():
            bag.weight.copy_(w.double().cpu())
        bags.append(bag)
    return bags


def reference_forward(bags, layout, indices, offsets, psw=None):
    B = (offsets.numel() - 1) // layout.T
    idx, off = indices.cpu().long(), offsets.cpu().long()
    outs = []
    for t, bag in enumerate(bags):
        lo, hi = int(off[t * B]), int(off[(t + 1) * B])
        sw = None if psw is None else psw[lo:hi]
        outs.append(bag(idx[lo:hi], off[t * B:(t + 1) * B] - lo, per_sample_weights=sw))
    return torch.cat(outs, dim=1)


def reference_row_grads(layout, weights, indices, offsets, grad_out, mode, psw=None):
    bags = reference_bags(layout, weights, mode)
    out = reference_forward(bags, layout, indices, offsets, psw)
    out.backward(grad_out.double().cpu())
    return [b.weight.grad if b.weight.grad is not None else torch.zeros_like(b.weight)
            for b in bags]


def random_layout(gen, T: int, dims=None) -> TableLayout:
    rows = [int(r) for r in torch.randint(1, 300, (T,), generator=gen)]
    rows[0] = 1  # a one-row table: every index is a duplicate
    if dims is None:
        dims = [int(d) for d in torch.randint(1, 9, (T,), generator=gen) * 4]
        dims[-1] = 3  # a dim that is not a multiple of 4
    return TableLayout(rows, dims)


def close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual.detach().double().cpu(), expected.double(), rtol=rtol,
                               atol=atol)


# --------------------------------------------------------------------------------------------
# Forward and gradients


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["i32", "i64"])
def test_forward_and_grad_match_embedding_bag(backend, dist, mode, index_dtype, rng_seed):
    skip_triton(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    layout = random_layout(gen, 5)
    B = 37
    indices, offsets = make_case(gen, layout, B, 20, dist, index_dtype)
    w0 = torch.randn(layout.numel, generator=gen)
    weights = w0.clone().to(backend.device).requires_grad_(True)
    out = table_batched_embedding_bag(weights, layout, indices.to(backend.device),
                                      offsets.to(backend.device), mode=mode, backend=backend.name)
    assert out.shape == (B, layout.total_D) and out.dtype == torch.float32
    bags = reference_bags(layout, w0, mode)
    expected = reference_forward(bags, layout, indices, offsets)
    close(out, expected, torch.float32)
    grad_out = torch.randn(out.shape, generator=gen)
    out.backward(grad_out.to(backend.device))
    expected.backward(grad_out.double())
    expected_grad = torch.cat([b.weight.grad.reshape(-1) for b in bags])
    close(weights.grad, expected_grad, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64],
                         ids=lambda d: str(d).removeprefix("torch."))
def test_low_and_high_precision_weights(backend, dtype, rng_seed):
    skip_triton(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    layout = random_layout(gen, 4)
    B = 29
    indices, offsets = make_case(gen, layout, B, 12, "uniform")
    w0 = torch.randn(layout.numel, generator=gen).to(dtype)
    weights = w0.clone().to(backend.device).requires_grad_(True)
    out = table_batched_embedding_bag(weights, layout, indices.to(backend.device),
                                      offsets.to(backend.device), backend=backend.name)
    assert out.dtype == dtype
    bags = reference_bags(layout, w0, "sum")
    expected = reference_forward(bags, layout, indices, offsets)
    close(out, expected, dtype)
    grad_out = torch.randn(out.shape, generator=gen).to(dtype)
    out.backward(grad_out.to(backend.device))
    expected.backward(grad_out.double())
    close(weights.grad, torch.cat([b.weight.grad.reshape(-1) for b in bags]), dtype)


def test_per_sample_weights(backend, rng_seed):
    skip_triton(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    layout = random_layout(gen, 3)
    B = 23
    indices, offsets = make_case(gen, layout, B, 9, "powerlaw")
    w0 = torch.randn(layout.numel, generator=gen)
    psw0 = torch.randn(indices.numel(), generator=gen)
    weights = w0.clone().to(backend.device).requires_grad_(True)
    psw = psw0.clone().to(backend.device).requires_grad_(True)
    out = table_batched_embedding_bag(weights, layout, indices.to(backend.device),
                                      offsets.to(backend.device), psw, backend=backend.name)
    bags = reference_bags(layout, w0, "sum")
    psw_ref = psw0.detach().double().requires_grad_(True)
    expected = reference_forward(bags, layout, indices, offsets, psw_ref)
    close(out, expected, torch.float32)
    grad_out = torch.randn(out.shape, generator=gen)
    out.backward(grad_out.to(backend.device))
    expected.backward(grad_out.double())
    close(weights.grad, torch.cat([b.weight.grad.reshape(-1) for b in bags]), torch.float32)
    close(psw.grad, psw_ref.grad, torch.float32)


def test_all_bags_empty_and_no_indices(backend):
    skip_triton(backend)
    layout = TableLayout([5, 3], [4, 8])
    d = backend.device
    weights = torch.randn(layout.numel, device=d, requires_grad=True)
    offsets = torch.zeros(2 * 6 + 1, dtype=torch.int64, device=d)
    indices = torch.zeros(0, dtype=torch.int64, device=d)
    for mode in ("sum", "mean"):
        out = table_batched_embedding_bag(weights, layout, indices, offsets, mode=mode,
                                          backend=backend.name)
        assert out.shape == (6, 12) and torch.count_nonzero(out) == 0
        out.sum().backward()
        assert torch.count_nonzero(weights.grad) == 0
    # B = 0: no bags at all.
    out = table_batched_embedding_bag(weights, layout, indices, offsets[:1], backend=backend.name)
    assert out.shape == (0, 12)


def test_one_index_per_bag_many_tables(backend, rng_seed):
    # The DLRM shape in miniature: 26 tables of one dim, one index per bag.
    skip_triton(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    layout = TableLayout([int(r) for r in torch.randint(1, 2000, (26,), generator=gen)], [16] * 26)
    B = 64
    offsets = torch.arange(26 * B + 1)
    indices = torch.cat([torch.randint(0, r, (B,), generator=gen) for r in layout.rows])
    w0 = torch.randn(layout.numel, generator=gen)
    out = table_batched_embedding_bag(w0.to(backend.device), layout, indices.to(backend.device),
                                      offsets.to(backend.device), backend=backend.name)
    close(out, reference_forward(reference_bags(layout, w0, "sum"), layout, indices, offsets),
          torch.float32)


# --------------------------------------------------------------------------------------------
# Fused updates


def dense_update_reference(layout, w0, row_grads, optimizer, lr, eps, momentum0):
    new_w, new_m = [], []
    for t, (w, g) in enumerate(zip(layout.split(w0.double()), row_grads)):
        if optimizer == "sgd":
            new_w.append((w - lr * g).reshape(-1))
        else:
            h = layout.hash_size_cumsum[t]
            m = momentum0[h:h + w.shape[0]].double() + g.pow(2).mean(dim=1)
            new_m.append(m)
            new_w.append((w - (lr / (m.sqrt() + eps)).unsqueeze(1) * g).reshape(-1))
    return torch.cat(new_w), (torch.cat(new_m) if new_m else None)


@pytest.mark.parametrize("optimizer", ["sgd", "rowwise_adagrad"])
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_fused_update_matches_dense_float64(backend, optimizer, dist, mode, rng_seed):
    skip_triton_backward_only(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    layout = random_layout(gen, 4)
    B = 300  # enough lookups that power-law and duplicate rows form runs of hundreds
    indices, offsets = make_case(gen, layout, B, 20, dist)
    w0 = torch.randn(layout.numel, generator=gen)
    m0 = torch.rand(layout.num_rows, generator=gen)
    lr, eps = 0.05, 1e-3
    d = backend.device
    weights = w0.clone().to(d).requires_grad_(True)
    momentum = m0.clone().to(d)
    out = table_batched_embedding_bag_fused(weights, layout, indices.to(d), offsets.to(d),
                                            mode=mode, optimizer=optimizer, lr=lr, eps=eps,
                                            momentum=momentum, backend=backend.name)
    grad_out = torch.randn(out.shape, generator=gen)
    out.backward(grad_out.to(d))
    assert weights.grad is None
    grads = reference_row_grads(layout, w0, indices, offsets, grad_out, mode)
    exp_w, exp_m = dense_update_reference(layout, w0, grads, optimizer, lr, eps, m0)
    close(weights, exp_w, torch.float32)
    if optimizer == "rowwise_adagrad":
        close(momentum, exp_m, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_fused_sgd_half_weights(backend, dtype, rng_seed):
    skip_triton_backward_only(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    layout = random_layout(gen, 3)
    indices, offsets = make_case(gen, layout, 50, 10, "powerlaw")
    w0 = torch.randn(layout.numel, generator=gen).to(dtype)
    d = backend.device
    weights = w0.clone().to(d).requires_grad_(True)
    out = table_batched_embedding_bag_fused(weights, layout, indices.to(d), offsets.to(d),
                                            optimizer="sgd", lr=0.01, backend=backend.name)
    grad_out = torch.randn(out.shape, generator=gen).to(dtype)
    out.backward(grad_out.to(d))
    grads = reference_row_grads(layout, w0, indices, offsets, grad_out, "sum")
    exp_w, _ = dense_update_reference(layout, w0, grads, "sgd", 0.01, 0.0, None)
    close(weights, exp_w, dtype)


def test_hot_row_thousands_of_duplicates(backend, rng_seed):
    # One row looked up 5000 times (runs of many chunks on the GPU) next to rows looked up once.
    skip_triton_backward_only(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    layout = TableLayout([50, 70], [128, 64])
    B = 2500
    idx0 = torch.where(torch.rand(2 * B, generator=gen) < 0.9, 7,
                       torch.randint(0, 50, (2 * B,), generator=gen))
    idx1 = torch.randint(0, 70, (B,), generator=gen)
    indices = torch.cat([idx0, idx1])
    lens = torch.cat([torch.full((B,), 2), torch.ones(B, dtype=torch.int64)])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)])
    w0 = torch.randn(layout.numel, generator=gen)
    d = backend.device
    for optimizer in ("grad", "sgd", "rowwise_adagrad"):
        weights = w0.clone().to(d)
        m0 = torch.rand(layout.num_rows, generator=gen)
        momentum = m0.clone().to(d) if optimizer == "rowwise_adagrad" else torch.zeros_like(weights)
        grad_out = torch.randn(B, layout.total_D, generator=gen)
        tbe_backward_update_(grad_out.to(d), weights, layout, indices.to(d), offsets.to(d),
                             optimizer=optimizer, lr=0.01, eps=1e-2, momentum=momentum,
                             backend=backend.name)
        grads = reference_row_grads(layout, w0, indices, offsets, grad_out, "sum")
        if optimizer == "grad":
            close(momentum, torch.cat([g.reshape(-1) for g in grads]), torch.float32)
            continue
        exp_w, exp_m = dense_update_reference(layout, w0, grads, optimizer, 0.01, 1e-2, m0)
        close(weights, exp_w, torch.float32)
        if exp_m is not None:
            close(momentum, exp_m, torch.float32)


def test_runs_around_slice_boundaries_and_wide_rows(backend, rng_seed):
    # Rows looked up 1 to 200 times in shuffled order: in key order, runs start and end at every
    # position of the GPU backward's 32-entry slices, and some span one, two or several slices.
    # The tables cover every column layout the CUDA kernels have: 256 wide (two chunks of
    # 4-column vectors), 130 (scalar columns), 64 and one column.
    skip_triton_backward_only(backend)
    gen = torch.Generator().manual_seed(rng_seed)
    layout = TableLayout([24, 24, 24, 5], [256, 130, 64, 1])
    lengths = torch.tensor([1, 2, 31, 32, 33, 63, 64, 65, 95, 96, 97, 200])
    B = 50
    indices, lens = [], []
    for t, rows in enumerate(layout.rows):
        per_row = lengths[torch.randint(0, lengths.numel(), (rows,), generator=gen)]
        if t == 0:
            # Table 0 comes first in key order: runs that start and end exactly on slice
            # boundaries (64 from 0, 32 from 64, 96 from 96, 64 from 224, ...).
            per_row[:12] = torch.tensor([64, 32, 96, 1, 31, 64, 65, 63, 2, 30, 32, 33])
        idx = torch.repeat_interleave(torch.arange(rows), per_row)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        cuts = torch.sort(torch.randint(0, idx.numel() + 1, (B - 1,), generator=gen)).values
        bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([idx.numel()])])
        indices.append(idx)
        lens.append(bounds[1:] - bounds[:-1])
    indices = torch.cat(indices)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cat(lens).cumsum(0)])
    w0 = torch.randn(layout.numel, generator=gen)
    d = backend.device
    for optimizer in ("grad", "sgd", "rowwise_adagrad"):
        for mode in ("sum", "mean"):
            weights = w0.clone().to(d)
            m0 = torch.rand(layout.num_rows, generator=gen)
            momentum = (m0.clone().to(d) if optimizer == "rowwise_adagrad"
                        else torch.zeros_like(weights))
            grad_out = torch.randn(B, layout.total_D, generator=gen)
            tbe_backward_update_(grad_out.to(d), weights, layout, indices.to(d), offsets.to(d),
                                 mode=mode, optimizer=optimizer, lr=0.01, eps=1e-2,
                                 momentum=momentum, backend=backend.name)
            grads = reference_row_grads(layout, w0, indices, offsets, grad_out, mode)
            if optimizer == "grad":
                close(momentum, torch.cat([g.reshape(-1) for g in grads]), torch.float32)
                continue
            exp_w, exp_m = dense_update_reference(layout, w0, grads, optimizer, 0.01, 1e-2, m0)
            close(weights, exp_w, torch.float32)
            if exp_m is not None:
                close(momentum, exp_m, torch.float32)
    out = table_batched_embedding_bag(w0.to(d), layout, indices.to(d), offsets.to(d),
                                      backend=backend.name)
    close(out, reference_forward(reference_bags(layout, w0, "sum"), layout, indices, offsets),
          torch.float32)


@pytest.mark.cuda
def test_cuda_updates_are_deterministic(rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    layout = TableLayout([100, 1000], [128, 32])
    indices, offsets = make_case(gen, layout, 4000, 20, "powerlaw")
    w0 = torch.randn(layout.numel, generator=gen).cuda()
    grad_out = torch.randn(4000, layout.total_D, generator=gen).cuda()
    results = []
    for _ in range(3):
        w = w0.clone()
        m = torch.zeros(layout.num_rows, device="cuda")
        tbe_backward_update_(grad_out, w, layout, indices.cuda(), offsets.cuda(),
                             optimizer="rowwise_adagrad", lr=0.1, momentum=m)
        results.append((w, m))
    for w, m in results[1:]:
        assert torch.equal(w, results[0][0]) and torch.equal(m, results[0][1])


# --------------------------------------------------------------------------------------------
# The module as a drop-in for a list of nn.EmbeddingBag


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_module_drop_in_for_embedding_bag_list(device, rng_seed):
    torch.manual_seed(rng_seed)
    sizes, dims, B = [40, 3, 100], [8, 8, 12], 16
    bags = nn.ModuleList([nn.EmbeddingBag(n, d, mode="sum", sparse=True) for n, d in zip(sizes, dims)]).to(device)
    module = TableBatchedEmbeddingBag.from_embedding_bags(list(bags), optimizer="sgd", lr=0.1)
    idx = [torch.randint(0, n, (B * 3,), device=device) for n in sizes]
    off = [torch.arange(0, B * 3, 3, device=device) for _ in sizes]
    ours = module(idx, off)
    theirs = [bag(i, o) for bag, i, o in zip(bags, idx, off)]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    grads = [torch.randn_like(t) for t in theirs]
    torch.autograd.backward(ours, grads)
    torch.autograd.backward(theirs, grads)
    torch.optim.SGD(bags.parameters(), lr=0.1).step()
    for a, b in zip(module.split_embedding_weights(), bags):
        torch.testing.assert_close(a, b.weight.detach(), rtol=1e-6, atol=1e-6)
    # 2-D inputs (fixed bag size), as nn.EmbeddingBag accepts them.
    idx2 = [torch.randint(0, n, (B, 2), device=device) for n in sizes]
    for a, bag, i in zip(module(idx2), bags, idx2):
        torch.testing.assert_close(a, bag(i), rtol=1e-6, atol=1e-6)


def test_module_without_optimizer_gives_dense_grad():
    module = TableBatchedEmbeddingBag([10, 20], 4, mode="mean")
    out = module(torch.tensor([1, 2, 3, 19]), torch.tensor([0, 1, 3, 3, 4]))
    assert out.shape == (2, 8)
    out.sum().backward()
    assert module.weight.grad.shape == (10 * 4 + 20 * 4,)
    assert torch.count_nonzero(module.weight.grad.view(-1, 4).any(dim=1)) == 4


def test_module_rowwise_adagrad_state():
    module = TableBatchedEmbeddingBag([10, 20], [4, 8], optimizer="rowwise_adagrad", lr=0.5)
    before = module.weight.detach().clone()
    module(torch.tensor([1, 1, 5]), torch.tensor([0, 2, 3])).sum().backward()
    assert module.weight.grad is None
    assert torch.count_nonzero(module.momentum) == 2
    changed = (module.weight.detach() != before).view(-1)
    assert changed[4:8].all() and changed[40 + 40:40 + 48].all() and changed.sum() == 12


# --------------------------------------------------------------------------------------------
# Bad inputs


def test_out_of_range_and_malformed_offsets(backend):
    skip_triton(backend)
    layout = TableLayout([5, 3], [4, 4])
    d = backend.device
    w = torch.randn(layout.numel, device=d)
    off = torch.tensor([0, 1, 2, 3, 4], device=d)

    def run(indices, offsets):
        return table_batched_embedding_bag(w, layout, indices, offsets, backend=backend.name)

    run(torch.tensor([4, 0, 2, 1], device=d), off)
    with pytest.raises(ValueError, match=r"indices\[2\] = 3 is out of range for table 1"):
        run(torch.tensor([4, 0, 3, 1], device=d), off)
    with pytest.raises(ValueError, match="out of range for table 0"):
        run(torch.tensor([4, -1, 2, 1], device=d), off)
    with pytest.raises(ValueError, match=r"offsets\[0\] must be 0"):
        run(torch.tensor([4, 0, 2, 1], device=d), off + 1)
    with pytest.raises(ValueError, match=r"offsets\[-1\]"):
        run(torch.tensor([4, 0, 2, 1, 1], device=d), off)
    with pytest.raises(ValueError, match="non-decreasing"):
        run(torch.tensor([4, 0, 2, 1], device=d), torch.tensor([0, 2, 1, 3, 4], device=d))


def test_bad_arguments():
    layout = TableLayout([5, 3], [4, 4])
    w = torch.randn(layout.numel)
    idx, off = torch.tensor([0, 1]), torch.tensor([0, 1, 1, 2, 2])
    with pytest.raises(TypeError, match="indices"):
        table_batched_embedding_bag(w, layout, idx.float(), off)
    with pytest.raises(TypeError, match="weights"):
        table_batched_embedding_bag(w.long(), layout, idx, off)
    with pytest.raises(ValueError, match="weights must be 1-D"):
        table_batched_embedding_bag(w[:-1], layout, idx, off)
    with pytest.raises(ValueError, match="offsets"):
        table_batched_embedding_bag(w, layout, idx, off[:-1])
    with pytest.raises(ValueError, match="mode"):
        table_batched_embedding_bag(w, layout, idx, off, mode="max")
    with pytest.raises(ValueError, match="per_sample_weights"):
        table_batched_embedding_bag(w, layout, idx, off, torch.ones(2), mode="mean")
    with pytest.raises(ValueError, match="per_sample_weights"):
        table_batched_embedding_bag(w, layout, idx, off, torch.ones(3))
    with pytest.raises(ValueError, match="momentum"):
        table_batched_embedding_bag_fused(w.requires_grad_(), layout, idx, off,
                                          optimizer="rowwise_adagrad")
    with pytest.raises(ValueError, match="optimizer"):
        table_batched_embedding_bag_fused(w, layout, idx, off, optimizer="adam")
    with pytest.raises(ValueError, match="backend"):
        table_batched_embedding_bag(w, layout, idx, off, backend="cuDNN")
    with pytest.raises(ValueError, match="rows"):
        TableLayout([5, 3], [4])


@pytest.mark.cuda
def test_cuda_mixed_devices_rejected():
    layout = TableLayout([5], [4])
    w = torch.randn(layout.numel, device="cuda")
    with pytest.raises(ValueError, match="indices"):
        table_batched_embedding_bag(w, layout, torch.tensor([0]), torch.tensor([0, 1]))


@pytest.mark.cuda
def test_cuda_unchecked_bad_index_reads_nothing_outside():
    # With the check off, a bad index must not fault: it contributes nothing.
    layout = TableLayout([5, 3], [4, 4])
    w = torch.randn(layout.numel, device="cuda")
    out = table_batched_embedding_bag(w, layout, torch.tensor([10**9, 1], device="cuda"),
                                      torch.tensor([0, 1, 2], device="cuda"), check_indices=False)
    torch.cuda.synchronize()
    assert torch.count_nonzero(out[0, :4]) == 0
    torch.testing.assert_close(out[0, 4:], w[20 + 4:20 + 8])


@pytest.mark.cuda
def test_cuda_unchecked_bad_index_updates_nothing():
    # With the check off, the fused backward leaves a bad index out and updates the other rows.
    layout = TableLayout([5, 3], [4, 4])
    w0 = torch.randn(layout.numel, device="cuda")
    w = w0.clone().requires_grad_(True)
    indices = torch.tensor([10**9, 1, 2, -3], device="cuda")
    offsets = torch.tensor([0, 1, 2, 3, 4], device="cuda")
    out = table_batched_embedding_bag_fused(w, layout, indices, offsets, lr=1.0,
                                            check_indices=False)
    out.backward(torch.ones_like(out))
    torch.cuda.synchronize()
    expected = w0.clone()
    expected[4:8] -= 1.0   # table 0, row 1 (bag 1)
    expected[20 + 8:20 + 12] -= 1.0   # table 1, row 2 (bag 0 of table 1)
    torch.testing.assert_close(w.detach(), expected)


@pytest.mark.cuda
def test_cuda_graph_capture(rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    layout = TableLayout([100, 50], [32, 16])
    indices, offsets = make_case(gen, layout, 64, 5, "uniform")
    indices, offsets = indices.cuda(), offsets.cuda()
    w = torch.randn(layout.numel, device="cuda")
    table_batched_embedding_bag(w, layout, indices, offsets)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = table_batched_embedding_bag(w, layout, indices, offsets)
    w.mul_(2)
    graph.replay()
    expected = reference_forward(reference_bags(layout, w.cpu(), "sum"), layout, indices, offsets)
    close(out, expected, torch.float32)


@pytest.mark.cuda
def test_cuda_fused_step_in_graph_matches_eager(rng_seed):
    # The fused step replayed from a CUDA graph updates the weights exactly as run eagerly.
    from mlperf_fast.cuda_graphs import capture

    gen = torch.Generator().manual_seed(rng_seed)
    layout = TableLayout([300, 50], [64, 12])
    indices, offsets = make_case(gen, layout, 96, 6, "powerlaw")
    indices, offsets = indices.cuda(), offsets.cuda()
    w0 = torch.randn(layout.numel, device="cuda")
    grad_out = torch.randn(96, layout.total_D, generator=gen).cuda()

    def step(w):
        out = table_batched_embedding_bag_fused(w, layout, indices, offsets, lr=0.1,
                                                check_indices=False)
        out.backward(grad_out)

    eager = w0.clone().requires_grad_(True)
    for _ in range(3):
        step(eager)
    graphed = w0.clone().requires_grad_(True)
    replay = capture(lambda: step(graphed))  # runs the step once before capturing it
    replay()
    replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(graphed.detach(), eager.detach(), rtol=0, atol=0)


def test_fake_tensor_shapes():
    if not torch.ops.mlperf_fast.tbe_forward.default.has_kernel_for_dispatch_key("CPU"):
        pytest.skip("extension not built")
    from torch._subclasses.fake_tensor import FakeTensorMode

    layout = TableLayout([5, 3], [4, 8])
    with FakeTensorMode():
        w = torch.empty(layout.numel)
        idx = torch.zeros(7, dtype=torch.int64)
        off = torch.zeros(2 * 3 + 1, dtype=torch.int64)
        out = table_batched_embedding_bag(w, layout, idx, off, backend="native")
        assert out.shape == (3, 12)


def test_validate_direct():
    layout = TableLayout([2], [1])
    validate(layout, torch.tensor([0, 1]), torch.tensor([0, 2]))
    with pytest.raises(ValueError):
        validate(layout, torch.tensor([0, 2]), torch.tensor([0, 2]))
    assert math.isfinite(0.0)
