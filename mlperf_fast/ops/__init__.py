"""The public ops of mlperf_fast.

Each op checks its arguments before any launch, runs on the CPU and the GPU with the same
semantics, and picks its backend (native C++/CUDA, Triton, or PyTorch) as described in
``mlperf_fast.ops._library``.
"""
from mlperf_fast.ops.dot_interaction import dot_interaction
from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm
from mlperf_fast.ops.table_batched_embedding import (
    TableLayout,
    table_batched_embedding_bag,
    table_batched_embedding_bag_fused,
    tbe_backward_update_,
)

__all__ = [
    "TableLayout",
    "dot_interaction",
    "multi_tensor_l2norm",
    "table_batched_embedding_bag",
    "table_batched_embedding_bag_fused",
    "tbe_backward_update_",
]
