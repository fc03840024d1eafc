"""Multi-tensor L2 norm (global and per-tensor) over BERT-large's parameter set.

Baseline: torch._foreach_norm then a norm of the stacked norms (what torch's clip_grad_norm_
does). Floor: every element read once.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm
from shapes import bert_large_shapes, make, numel


def _foreach(tensors):
    norms = torch._foreach_norm(tensors)
    return torch.linalg.vector_norm(torch.stack(norms)), norms


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_l2norm_bert_large(measure, dtype):
    shapes = bert_large_shapes()
    tensors = make(shapes, dtype)
    group = f"multi_tensor_l2norm, BERT-large, {str(dtype).removeprefix('torch.')}"
    shape = f"{numel(shapes):,} elements in {len(shapes)} tensors"
    nbytes = numel(shapes) * tensors[0].element_size()
    measure(group, "torch _foreach_norm", lambda: _foreach(tensors), role="baseline", shape=shape,
            bytes=nbytes)
    measure(group, "mlperf_fast native", lambda: multi_tensor_l2norm(tensors, True, backend="native"),
            shape=shape, bytes=nbytes)
    measure(group, "mlperf_fast triton", lambda: multi_tensor_l2norm(tensors, True, backend="triton"),
            shape=shape, bytes=nbytes)
