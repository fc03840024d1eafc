"""The Triton twin of csrc/common/multi_tensor_apply.cuh: lists of tensors cut into fixed-size
chunks, one program per chunk.

Triton has no pointer arrays, so the addresses of the tensors travel as an int64 tensor and a
kernel casts them back (``tl.load(addresses + t).to(tl.pointer_type(DTYPE))``). The tables are
built on the host once per distinct set of tensors and kept in a small cache, since optimizers
and norms are called on the same parameters every step.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
import triton
import triton.language as tl

TRITON_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}


class ChunkTable(NamedTuple):
    """Where each program of a multi-tensor launch works. All tensors on the lists' device."""

    addresses: torch.Tensor  # (depth, n) int64: data pointers of each list's tensors
    numels: torch.Tensor  # (n,) int64
    positions: torch.Tensor  # (n,) int64: each tensor's position in the caller's lists
    first_chunk: torch.Tensor  # (n,) int64: global id of each tensor's first chunk
    block_slot: torch.Tensor  # (blocks,) int32: the tensor (index into the rows above)
    block_chunk: torch.Tensor  # (blocks,) int32: the chunk within that tensor
    blocks: int


def chunk_counts(tensors: Sequence[torch.Tensor], chunk_size: int) -> list[int]:
    """Global numbering of chunks: tensor i owns chunks [first[i], first[i+1]); first[-1] is the
    total. Same layout as ChunkLayout in csrc/common/multi_tensor.h."""
    first = [0]
    for t in tensors:
        first.append(first[-1] + -(-t.numel() // chunk_size))
    return first


_cache: OrderedDict[tuple, ChunkTable] = OrderedDict()
_CACHE_SIZE = 16


def chunk_table(
    lists: Sequence[Sequence[torch.Tensor]],
    which: Sequence[int],
    chunk_size: int,
    per_tensor: bool = False,
) -> ChunkTable:
    """The table for the tensors at positions ``which`` of ``lists`` (parallel lists of equal
    length): one program per chunk, or one per non-empty tensor if ``per_tensor``."""
    key = (
        chunk_size,
        per_tensor,
        tuple(which),
        tuple(tuple(lst[i].data_ptr() for i in which) for lst in lists),
        tuple(lists[0][i].numel() for i in which),
    )
    table = _cache.get(key)
    if table is not None:
        _cache.move_to_end(key)
        return table
    first = chunk_counts(lists[0], chunk_size)
    slots, block_slot, block_chunk = [], [], []
    for i in which:
        chunks = first[i + 1] - first[i]
        if chunks == 0:
            continue
        if per_tensor:
            chunks = 1
        block_slot += [len(slots)] * chunks
        block_chunk += range(chunks)
        slots.append(i)
    device = lists[0][0].device
    table = ChunkTable(
        addresses=torch.tensor(
            [[lst[i].data_ptr() for i in slots] for lst in lists], dtype=torch.int64
        ).to(device),
        numels=torch.tensor([lists[0][i].numel() for i in slots], dtype=torch.int64).to(device),
        positions=torch.tensor(slots, dtype=torch.int64).to(device),
        first_chunk=torch.tensor([first[i] for i in slots], dtype=torch.int64).to(device),
        block_slot=torch.tensor(block_slot, dtype=torch.int32).to(device),
        block_chunk=torch.tensor(block_chunk, dtype=torch.int32).to(device),
        blocks=len(block_slot),
    )
    _cache[key] = table
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return table


def positions_by_dtype(tensors: Sequence[torch.Tensor]) -> dict[torch.dtype, list[int]]:
    groups: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.dtype, []).append(i)
    return groups


# --------------------------------------------------------------------------------------------
# What every program of a fused optimizer step (kernels/lamb.py, kernels/sgd.py) starts with.


@triton.jit
def as_dtype(x, T: tl.constexpr):
    """A scalar argument in dtype T (host floats arrive as float32, or as Python floats in the
    interpreter)."""
    return x + tl.zeros([], T)


@triton.jit
def grad_prologue(found_inf, grad_scale, grad_norm, max_grad_norm,
                  HAS_INF: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_NORM: tl.constexpr):
    """(live, divisor) as grad_prologue in csrc/common/optim_math.h: live is 1, or 0 when the
    step is skipped (kernels multiply their element count by it, which masks every access)."""
    live = 1
    if HAS_INF:
        live = (tl.load(found_inf).to(tl.float64) == 0).to(tl.int64)
    divisor = tl.full([], 1.0, tl.float64)
    if HAS_SCALE:
        divisor = tl.load(grad_scale).to(tl.float64)
    if HAS_NORM:
        norm = tl.load(grad_norm).to(tl.float64) / divisor
        divisor = tl.where((max_grad_norm > 0) & (norm > max_grad_norm),
                           divisor * (norm / max_grad_norm), divisor)
    return live, divisor


@triton.jit
def list_pointer(addresses, n_slots, slot, k, T: tl.constexpr):
    """The data pointer of list ``k``'s tensor in ``slot`` (a row of ChunkTable.addresses)."""
    return tl.load(addresses + k * n_slots + slot).to(tl.pointer_type(T))


@triton.jit
def step_prologue(block_slot, block_chunk, numels, lr_ptr, lr, found_inf, grad_scale, grad_norm,
                  max_grad_norm, HAS_LR: tl.constexpr, HAS_INF: tl.constexpr,
                  HAS_SCALE: tl.constexpr, HAS_NORM: tl.constexpr, T: tl.constexpr):
    """(slot, chunk, numel, live, divisor, rate): this program's tensor (its row in the table),
    chunk and element count; whether the step runs and what the gradients are divided by
    (grad_prologue); the learning rate in T (from ``lr_ptr`` when HAS_LR, so that a captured
    graph reads each step's)."""
    pid = tl.program_id(0)
    slot = tl.load(block_slot + pid)
    chunk = tl.load(block_chunk + pid).to(tl.int64)
    n = tl.load(numels + slot)
    live, divisor = grad_prologue(found_inf, grad_scale, grad_norm, max_grad_norm, HAS_INF,
                                  HAS_SCALE, HAS_NORM)
    rate = as_dtype(lr, T)
    if HAS_LR:
        rate = tl.load(lr_ptr).to(T)
    return slot, chunk, n, live, divisor, rate
