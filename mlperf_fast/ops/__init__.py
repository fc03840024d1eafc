"""The public ops of mlperf_fast.

Each op checks its arguments before any launch, runs on the CPU and the GPU with the same
semantics, and picks its backend (native C++/CUDA, Triton, or PyTorch) as described in
``mlperf_fast.ops._library``.
"""
from mlperf_fast.ops.dot_interaction import dot_interaction
from mlperf_fast.ops.lstm_cell import lstm_cell, lstm_layer
from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm
from mlperf_fast.ops.rnnt_greedy import PredictionNet, rnnt_greedy_decode
from mlperf_fast.ops.rnnt_loss import rnnt_loss, rnnt_loss_packed
from mlperf_fast.ops.table_batched_embedding import (
    TableLayout,
    table_batched_embedding_bag,
    table_batched_embedding_bag_fused,
    tbe_backward_update_,
)
from mlperf_fast.ops.transducer_joint import transducer_joint
from mlperf_fast.ops.transducer_joint_loss import transducer_joint_loss

__all__ = [
    "PredictionNet",
    "TableLayout",
    "dot_interaction",
    "lstm_cell",
    "lstm_layer",
    "multi_tensor_l2norm",
    "rnnt_greedy_decode",
    "rnnt_loss",
    "rnnt_loss_packed",
    "table_batched_embedding_bag",
    "table_batched_embedding_bag_fused",
    "tbe_backward_update_",
    "transducer_joint",
    "transducer_joint_loss",
]
