"""The public ops of mlperf_fast.

Each op checks its arguments before any launch, runs on the CPU and the GPU with the same
semantics, and picks its backend (native C++/CUDA, Triton, or PyTorch) as described in
``mlperf_fast.ops._library``.
"""
from mlperf_fast.ops.box_decode import box_decode
from mlperf_fast.ops.box_iou import box_iou
from mlperf_fast.ops.match_boxes import match_boxes
from mlperf_fast.ops.multi_tensor_l2norm import multi_tensor_l2norm
from mlperf_fast.ops.nms import Detections, batched_nms, nms, nms_padded
from mlperf_fast.ops.retinanet_postprocess import retinanet_postprocess
from mlperf_fast.ops.sigmoid_focal_loss import sigmoid_focal_loss

__all__ = ["Detections", "batched_nms", "box_decode", "box_iou", "match_boxes",
           "multi_tensor_l2norm", "nms", "nms_padded", "retinanet_postprocess",
           "sigmoid_focal_loss"]
