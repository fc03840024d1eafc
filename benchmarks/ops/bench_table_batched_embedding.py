"""Table-batched embedding bags on DLRM's shape: 26 tables x 1M rows x 128 fp32, batch 65,536,
1 or 20 indices per bag, uniform or power-law (Zipf 1.05) indices.

Baselines, same inputs, same run: one nn.EmbeddingBag per table (sparse gradients and
torch.optim.SGD for training), and FBGEMM's table-batched embedding with its fused EXACT_SGD
backward (skipped if fbgemm_gpu is absent). The torch tables are views of our buffer; FBGEMM
gets its own copy, freed after its measurements. Ours also runs replayed from CUDA graphs
(forward, and forward + backward + SGD), the host's launches dropping out.

Floors (bytes over the measured copy bandwidth):
  forward:  every looked-up row read, the output written, indices and offsets read;
  training: the forward's bytes + the output gradient read + every touched row read and written
            (and, for row-wise Adagrad, its momentum).
The training floor reads the output gradient once. A deterministic backward sums each row's
gradient in row order, which scatters a bag's lookups, so it reads a bag's gradient row once per
lookup: the same at one index per bag, 16.6 GB more than the floor at 20 (5.6 ms at the H100's
measured 2.94 TB/s) unless the L2 serves it. A table's gradient columns take 33.5 MB; the
backward loads them under an L2 evict_last policy, and at 20 indices per bag it now runs below
that per-lookup count (18.2 ms uniform against 18.9), so part of those reads hit the L2.
"""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from mlperf_fast.cuda_graphs import capture
from mlperf_fast.ops.table_batched_embedding import (
    TableLayout,
    table_batched_embedding_bag,
    table_batched_embedding_bag_fused,
)

T, ROWS, DIM, BATCH = 26, 1_000_000, 128, 65_536
LR = 0.01


def zipf_indices(gen, n: int, rows: int, alpha: float = 1.05) -> torch.Tensor:
    """Ranks drawn from Zipf(alpha) over ``rows`` by the inverse of its continuous CDF, mapped to
    rows through a fixed random permutation (hot rows are scattered, as hashed ids are)."""
    u = torch.rand(n, generator=gen, device="cuda", dtype=torch.float64)
    e = 1.0 - alpha
    rank = ((rows ** e - 1.0) * u + 1.0).pow(1.0 / e).floor().long().clamp_(1, rows) - 1
    perm = torch.randperm(rows, generator=gen, device="cuda")
    return perm[rank]


@pytest.fixture(scope="module")
def tables():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    layout = TableLayout([ROWS] * T, [DIM] * T)
    weights = torch.empty(layout.numel, device="cuda").uniform_(-0.05, 0.05)
    yield layout, weights
    del weights
    gc.collect()
    torch.cuda.empty_cache()


def make_inputs(L: int, dist: str):
    gen = torch.Generator(device="cuda").manual_seed(L * 7 + (dist == "powerlaw"))
    n = T * BATCH * L
    if dist == "uniform":
        indices = torch.randint(0, ROWS, (n,), generator=gen, device="cuda")
    else:
        indices = zipf_indices(gen, n, ROWS)
    offsets = torch.arange(0, n + 1, L, device="cuda")
    return indices, offsets


def unique_rows(indices: torch.Tensor, L: int) -> int:
    table = torch.arange(indices.numel(), device="cuda") // (BATCH * L)
    return int(torch.unique(table * ROWS + indices).numel())


def floors(indices, offsets, L):
    n = indices.numel()
    out_bytes = BATCH * T * DIM * 4
    fwd = n * DIM * 4 + out_bytes + n * indices.element_size() + offsets.numel() * 8
    u = unique_rows(indices, L)
    train = fwd + out_bytes + 2 * u * DIM * 4
    return fwd, train, u


def torch_bags(layout, weights):
    bags = []
    for w in layout.split(weights):
        bag = nn.EmbeddingBag(ROWS, DIM, mode="sum", sparse=True, _weight=w, device="cuda")
        bags.append(bag)
    return bags


def fbgemm_module():
    fbgemm = pytest.importorskip("fbgemm_gpu")
    try:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice,
            SplitTableBatchedEmbeddingBagsCodegen,
        )
    except ImportError as e:  # layouts of older releases
        pytest.skip(f"fbgemm_gpu {getattr(fbgemm, '__version__', '?')} has another layout: {e}")
    return SplitTableBatchedEmbeddingBagsCodegen(
        [(ROWS, DIM, EmbeddingLocation.DEVICE, ComputeDevice.CUDA)] * T,
        optimizer=EmbOptimType.EXACT_SGD, learning_rate=LR, weights_precision=SparseType.FP32,
        output_dtype=SparseType.FP32, device=torch.device("cuda"))


@pytest.mark.parametrize("dist", ["uniform", "powerlaw"])
@pytest.mark.parametrize("L", [1, 20])
def test_tbe_dlrm(measure, tables, L, dist):
    layout, weights = tables
    indices, offsets = make_inputs(L, dist)
    fwd_bytes, train_bytes, touched = floors(indices, offsets, L)
    shape = (f"26 x 1M x 128 fp32, B=65536, {L} per bag, {dist} ({touched:,} rows touched)")
    fwd_group = f"TBE forward, L={L}, {dist}"
    train_group = f"TBE forward+backward+SGD, L={L}, {dist}"
    grad_out = torch.randn(BATCH, T * DIM, device="cuda")

    # torch: one nn.EmbeddingBag per table on views of our buffer.
    bags = torch_bags(layout, weights)
    per_idx = [indices[t * BATCH * L:(t + 1) * BATCH * L] for t in range(T)]
    per_off = torch.arange(0, BATCH * L, L, device="cuda")
    per_grad = list(grad_out.split(DIM, dim=1))
    opt = torch.optim.SGD([b.weight for b in bags], lr=LR)

    def torch_forward():
        # The list of outputs, as a model uses it (no concatenation charged to the baseline).
        with torch.no_grad():
            return [b(i, per_off) for b, i in zip(bags, per_idx)]

    def torch_train():
        outs = [b(i, per_off) for b, i in zip(bags, per_idx)]
        torch.autograd.backward(outs, per_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)

    measure(fwd_group, "torch nn.EmbeddingBag per table", torch_forward, role="baseline",
            shape=shape, bytes=fwd_bytes)
    measure(train_group, "torch nn.EmbeddingBag per table, sparse grad + SGD", torch_train,
            role="baseline", shape=shape, bytes=train_bytes)
    del bags, opt
    # Each implementation starts from an empty allocator cache, not from the blocks another
    # one left behind (the baseline's sparse gradients take about 18 GB at 20 indices per bag).
    gc.collect()
    torch.cuda.empty_cache()

    # Ours.
    w = weights.requires_grad_(True)

    def ours_forward(check):
        with torch.no_grad():
            return table_batched_embedding_bag(w, layout, indices, offsets, check_indices=check)

    def ours_train():
        out = table_batched_embedding_bag_fused(w, layout, indices, offsets, optimizer="sgd",
                                                lr=LR, check_indices=False)
        out.backward(grad_out)

    measure(fwd_group, "mlperf_fast native", lambda: ours_forward(False), shape=shape,
            bytes=fwd_bytes)
    measure(fwd_group, "mlperf_fast native, indices checked", lambda: ours_forward(True),
            shape=shape, bytes=fwd_bytes)

    def triton_forward():
        with torch.no_grad():
            return table_batched_embedding_bag(w, layout, indices, offsets, check_indices=False,
                                               backend="triton")

    measure(fwd_group, "mlperf_fast triton", triton_forward, shape=shape, bytes=fwd_bytes)
    measure(train_group, "mlperf_fast native, fused SGD", ours_train, shape=shape,
            bytes=train_bytes)
    # The same calls replayed from CUDA graphs: the GPU's time without the host's launches.
    replay = capture(lambda: ours_forward(False))
    measure(fwd_group, "mlperf_fast native, CUDA graph", replay, shape=shape, bytes=fwd_bytes)
    replay = capture(ours_train)
    measure(train_group, "mlperf_fast native, fused SGD, CUDA graph", replay, shape=shape,
            bytes=train_bytes)
    del replay
    gc.collect()
    momentum = torch.zeros(layout.num_rows, device="cuda")

    def ours_adagrad():
        out = table_batched_embedding_bag_fused(w, layout, indices, offsets,
                                                optimizer="rowwise_adagrad", lr=LR,
                                                momentum=momentum, check_indices=False)
        out.backward(grad_out)

    measure(f"TBE forward+backward+row-wise Adagrad, L={L}, {dist}",
            "mlperf_fast native, fused row-wise Adagrad", ours_adagrad, shape=shape,
            bytes=train_bytes + 2 * touched * 4)
    w.requires_grad_(False)
    del momentum
    gc.collect()
    torch.cuda.empty_cache()

    # FBGEMM, with its own copy of the tables.
    try:
        emb = fbgemm_module()
    except pytest.skip.Exception:
        return
    fb_off = offsets.to(indices.dtype)

    def fbgemm_forward():
        with torch.no_grad():
            return emb(indices, fb_off)

    def fbgemm_train():
        emb(indices, fb_off).backward(grad_out)

    measure(fwd_group, "fbgemm_gpu TBE", fbgemm_forward, role="baseline", shape=shape,
            bytes=fwd_bytes)
    measure(train_group, "fbgemm_gpu TBE, fused EXACT_SGD", fbgemm_train, role="baseline",
            shape=shape, bytes=train_bytes)
    del emb
    gc.collect()
    torch.cuda.empty_cache()
