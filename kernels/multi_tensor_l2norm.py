"""Triton multi-tensor L2 norm: the twin of csrc/multi_tensor_l2norm/multi_tensor_l2norm_cuda.cu.

Pass 1, one program per chunk: the chunk's sum of squares into a buffer of partials.
Pass 2, one program per tensor: its partials summed in order. No atomics: deterministic.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from mlperf_fast.kernels.multi_tensor import TRITON_DTYPES, chunk_counts, chunk_table, positions_by_dtype

CHUNK_SIZE = 65536
BLOCK = 4096


@triton.jit
def _chunk_squares(
    addresses, numels, first_chunk, block_slot, block_chunk, partial,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr, DTYPE: tl.constexpr, ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    slot = tl.load(block_slot + pid)
    chunk = tl.load(block_chunk + pid).to(tl.int64)
    x_ptr = tl.load(addresses + slot).to(tl.pointer_type(DTYPE))
    n = tl.load(numels + slot)
    start = chunk * CHUNK
    acc = tl.zeros([BLOCK], ACC)
    # Stop at the tensor's end: a small tensor's lone chunk costs one iteration, not CHUNK/BLOCK.
    for off in range(0, tl.minimum(CHUNK, n - start), BLOCK):
        idx = start + off + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + idx, mask=idx < n, other=0.0).to(ACC)
        acc += x * x
    tl.store(partial + tl.load(first_chunk + slot) + chunk, tl.sum(acc, axis=0))


@triton.jit
def _tensor_squares(
    numels, positions, first_chunk, partial, squares,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):
    slot = tl.program_id(0)
    chunks = (tl.load(numels + slot) + CHUNK - 1) // CHUNK
    base = tl.load(first_chunk + slot)
    acc = tl.zeros([BLOCK], ACC)
    for off in range(0, chunks, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        acc += tl.load(partial + base + idx, mask=idx < chunks, other=0.0)
    tl.store(squares + tl.load(positions + slot), tl.sum(acc, axis=0))


def multi_tensor_l2norm(
    tensors: Sequence[torch.Tensor], per_tensor: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as mlperf_fast.ops.multi_tensor_l2norm (arguments already checked)."""
    tensors = [t.contiguous() for t in tensors]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    device = tensors[0].device
    first = chunk_counts(tensors, CHUNK_SIZE)
    partial = torch.empty(first[-1], dtype=dtype, device=device)
    squares = torch.zeros(len(tensors), dtype=dtype, device=device)
    acc = TRITON_DTYPES[dtype]
    for x_dtype, which in positions_by_dtype(tensors).items():
        table = chunk_table([tensors], which, CHUNK_SIZE)
        if table.blocks:
            _chunk_squares[(table.blocks,)](
                table.addresses, table.numels, table.first_chunk, table.block_slot,
                table.block_chunk, partial,
                CHUNK=CHUNK_SIZE, BLOCK=BLOCK, DTYPE=TRITON_DTYPES[x_dtype], ACC=acc, num_warps=8,
            )
    table = chunk_table([tensors], range(len(tensors)), CHUNK_SIZE, per_tensor=True)
    if table.blocks:
        _tensor_squares[(table.blocks,)](
            table.numels, table.positions, table.first_chunk, partial, squares,
            CHUNK=CHUNK_SIZE, BLOCK=256, ACC=acc,
        )
    total = squares.sum().sqrt()
    return total, squares.sqrt() if per_tensor else squares.new_empty(0)
