"""The public ops of mlperf_fast.

Each op checks its arguments before any launch, runs on the CPU and the GPU with the same
semantics, and picks its backend (native C++/CUDA, Triton, or PyTorch) from its entry in the
backend table of ``mlperf_fast.ops._library`` (``OPS``). TorchScript is not supported (it is
deprecated in torch): use torch.compile, which traces every op.
"""
from mlperf_fast.ops.bias_dropout_add_layer_norm import bias_dropout_add_layer_norm
from mlperf_fast.ops.bias_gelu import bias_gelu
from mlperf_fast.ops.box_decode import box_decode
from mlperf_fast.ops.box_iou import box_iou
from mlperf_fast.ops.dot_interaction import dot_interaction
from mlperf_fast.ops.lamb import adam_step, lamb_step
from mlperf_fast.ops.lstm_cell import lstm_cell, lstm_layer
from mlperf_fast.ops.match_boxes import match_boxes
from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm
from mlperf_fast.ops.nms import Detections, batched_nms, nms, nms_padded
from mlperf_fast.ops.retinanet_postprocess import retinanet_postprocess
from mlperf_fast.ops.rnnt_greedy import PredictionNet, rnnt_greedy_decode
from mlperf_fast.ops.rnnt_loss import rnnt_loss, rnnt_loss_packed
from mlperf_fast.ops.sgd import lars_step, sgd_step
from mlperf_fast.ops.sigmoid_focal_loss import sigmoid_focal_loss
from mlperf_fast.ops.table_batched_embedding import (
    TableLayout,
    table_batched_embedding_bag,
    table_batched_embedding_bag_fused,
    tbe_backward_update_,
)
from mlperf_fast.ops.transducer_joint import transducer_joint
from mlperf_fast.ops.transducer_joint_loss import transducer_joint_loss

from mlperf_fast.ops import _fakes  # noqa: E402, F401  (after every op: registers their fakes)

__all__ = [
    "Detections",
    "PredictionNet",
    "TableLayout",
    "adam_step",
    "batched_nms",
    "bias_dropout_add_layer_norm",
    "bias_gelu",
    "box_decode",
    "box_iou",
    "dot_interaction",
    "lamb_step",
    "lars_step",
    "lstm_cell",
    "lstm_layer",
    "match_boxes",
    "multi_tensor_l2norm",
    "nms",
    "nms_padded",
    "retinanet_postprocess",
    "rnnt_greedy_decode",
    "rnnt_loss",
    "rnnt_loss_packed",
    "sgd_step",
    "sigmoid_focal_loss",
    "table_batched_embedding_bag",
    "table_batched_embedding_bag_fused",
    "tbe_backward_update_",
    "transducer_joint",
    "transducer_joint_loss",
]
