"""L2 norms of a list of tensors in one pass: each tensor's norm and the norm of them all.

The global gradient norm for clipping and the per-tensor norms of LAMB's trust ratio are this
op. It replaces ``torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mlperf_fast.ops import _checks
from mlperf_fast.ops._library import custom_op, register_op

# Elements per chunk (one CUDA block's or Triton program's work); matches kL2NormChunk in
# csrc/multi_tensor_l2norm/multi_tensor_l2norm.h.
CHUNK_SIZE = 65536


def _out_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def multi_tensor_l2norm(
    tensors: Sequence[torch.Tensor], per_tensor: bool = False, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norm of the concatenation of ``tensors``, and of each tensor.

    Args:
        tensors: tensors of any shapes and sizes (empty ones included), float32, float64,
            float16 or bfloat16 (mixed dtypes allowed), dense, all on one device. Non-contiguous
            tensors are read through a contiguous copy.
        per_tensor: also return each tensor's norm.
        backend: "auto", "native" (C++ or CUDA kernel), "triton" or "torch"; see
            ``mlperf_fast.ops._library``.

    Returns:
        ``(total, norms)``: ``total`` is a 0-dim tensor, ``norms`` has shape ``(len(tensors),)``
        if ``per_tensor`` else ``(0,)``. Both are float64 if any input is float64, else float32
        (float16 and bfloat16 are accumulated in float32), on the tensors' device. The sum is
        reduced in a fixed order, so repeated calls give identical results. An empty list gives
        a zero norm on the CPU.
    """
    tensors = _checks.tensor_list(tensors, "tensors")
    _checks.float_dtypes(tensors, "tensors")
    if not tensors:
        return torch.zeros((), dtype=torch.float32), torch.zeros(0, dtype=torch.float32)
    return MULTI_TENSOR_L2NORM(tensors[0].device, backend, tensors, bool(per_tensor))


def multi_tensor_l2norm_torch(
    tensors: Sequence[torch.Tensor], per_tensor: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pure-PyTorch implementation: same contract as :func:`multi_tensor_l2norm`."""
    dtype = _out_dtype(tensors)
    # Accumulated in float64: torch's float32 reductions on the CPU drift by ~1e-4 relative over
    # millions of elements, more than the kernels' tree reductions.
    norms = torch.stack(
        [torch.linalg.vector_norm(t.reshape(-1), dtype=torch.float64) for t in tensors]
    )
    total = torch.linalg.vector_norm(norms).to(dtype)
    return total, norms.to(dtype) if per_tensor else norms.new_empty(0, dtype=dtype)


def _multi_tensor_l2norm_triton(tensors, per_tensor=False):
    from mlperf_fast.kernels import multi_tensor_l2norm as kernel

    return kernel.multi_tensor_l2norm(tensors, per_tensor)


multi_tensor_l2norm_triton = custom_op(
    "multi_tensor_l2norm_triton", "(Tensor[] tensors, bool per_tensor=False) -> (Tensor, Tensor)",
    _multi_tensor_l2norm_triton)
MULTI_TENSOR_L2NORM = register_op("multi_tensor_l2norm", native="multi_tensor_l2norm",
                                  triton=multi_tensor_l2norm_triton,
                                  torch_fn=multi_tensor_l2norm_torch)
