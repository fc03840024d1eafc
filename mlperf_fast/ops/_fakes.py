"""Every fake (meta) implementation of the torch.library ops of mlperf_fast, in one place: what
torch.compile, torch.library.opcheck and CUDA graph capture see of an op (output shapes, dtypes
and devices, without running it). The ops of _C (csrc/registration.cpp) get theirs only when the
extension is loaded; those defined in Python (``*_triton``, ``*_torch``) always.

Imported by mlperf_fast.ops after every op module, so that each op exists when its fake is
registered.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mlperf_fast.ops._checks import acc_dtype
from mlperf_fast.ops._library import NATIVE_KERNELS
from mlperf_fast.ops.dot_interaction import output_width
from mlperf_fast.ops.multi_tensor_l2norm import _out_dtype
from mlperf_fast.ops.nms import _slots


def fake(*names: str) -> Callable:
    """Register the decorated function as the fake of each ``mlperf_fast::<name>`` that exists
    (a C++ op is missing when _C is not built)."""
    def register(fn: Callable) -> Callable:
        for name in names:
            if name in NATIVE_KERNELS or hasattr(torch.ops.mlperf_fast, name):
                torch.library.register_fake(f"mlperf_fast::{name}", fn)
        return fn
    return register


def _native(*names: str) -> tuple[str, ...]:
    return tuple(n for n in names if n in NATIVE_KERNELS)


# --------------------------------------------------------------------------------- detection


@fake("box_iou_triton")
def _(boxes1, boxes2):
    return boxes1.new_empty((boxes1.shape[0], boxes1.shape[1], boxes2.shape[1]))


@fake("box_decode_triton")
def _(rel_codes, anchors, weights, bbox_xform_clip, image_sizes):
    return torch.empty_like(rel_codes, memory_format=torch.contiguous_format)


@fake("match_boxes_triton")
def _(gt_boxes, anchors, num_gt, high_threshold, low_threshold, allow_low_quality_matches):
    return gt_boxes.new_empty((gt_boxes.shape[0], anchors.shape[0]), dtype=torch.int64)


@fake(*_native("nms"), "nms_triton")
def _(boxes, scores, iou_threshold):
    n = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n,), dtype=torch.int64)


@fake(*_native("batched_nms"), "batched_nms_triton")
def _(boxes, scores, idxs, iou_threshold):
    n = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n,), dtype=torch.int64)


@fake(*_native("nms_padded"), "nms_padded_triton")
def _(boxes, scores, labels, iou_threshold, score_threshold, pre_nms_top_k, max_detections):
    batch, n = scores.shape
    k = _slots(n, pre_nms_top_k, max_detections)[1]
    return (boxes.new_empty((batch, k, 4)), scores.new_empty((batch, k)),
            scores.new_empty((batch, k), dtype=torch.int64),
            scores.new_empty((batch, k), dtype=torch.int64),
            scores.new_empty((batch,), dtype=torch.int64))


@fake("sigmoid_focal_loss_triton")
def _(inputs, targets, alpha, gamma, reduction):
    return inputs.new_empty(inputs.shape if reduction == "none" else ())


@fake("sigmoid_focal_loss_triton_backward")
def _(grad, inputs, targets, alpha, gamma, reduction):
    return torch.empty_like(inputs, memory_format=torch.contiguous_format)


# --------------------------------------------------------------------------------- BERT


@fake("bias_gelu_triton")
def _(x, bias, approximate):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@fake("bias_gelu_triton_backward")
def _(grad, x, bias, approximate):
    return torch.empty_like(x, memory_format=torch.contiguous_format), bias.new_empty(bias.shape)


@fake("bias_dropout_add_layer_norm_triton")
def _(x, bias, residual, weight, ln_bias, p, eps, seed):
    rows = math.prod(x.shape[:-1])
    stats = {"dtype": acc_dtype(x.dtype), "device": x.device}
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty(rows, **stats), torch.empty(rows, **stats))


@fake("bias_dropout_add_layer_norm_triton_backward")
def _(grad, x, bias, residual, weight, ln_bias, mean, rstd, p, seed):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            bias.new_empty(bias.shape),
            torch.empty_like(residual, memory_format=torch.contiguous_format),
            weight.new_empty(weight.shape), ln_bias.new_empty(ln_bias.shape))


# --------------------------------------------------------------------------------- DLRM


@fake(*_native("dot_interaction_forward"))
def _(dense, embeddings):
    return dense.new_empty((dense.shape[0], output_width(embeddings.shape[1], dense.shape[1])))


@fake(*_native("dot_interaction_backward"))
def _(grad_output, dense, embeddings):
    return torch.empty_like(dense), torch.empty_like(embeddings)


@fake(*_native("tbe_forward"))
def _(weights, weights_offsets, D_offsets, indices, offsets, pooling, per_sample_weights,
      total_D):
    T = weights_offsets.numel()
    return weights.new_empty(((offsets.numel() - 1) // max(T, 1), total_D))


@fake("tbe_forward_triton")
def _(weights, weights_offsets, D_offsets, indices, offsets, mean, per_sample_weights, total_D,
      max_D):
    T = weights_offsets.numel()
    return weights.new_empty(((offsets.numel() - 1) // max(T, 1), total_D))


@fake(*_native("tbe_backward_"))
def _(grad_output, weights, weights_offsets, D_offsets, hash_size_cumsum, indices, offsets,
      pooling, per_sample_weights, update, lr, eps, momentum, grad, num_rows, max_D):
    return None


@fake(*_native("tbe_per_sample_weights_grad"))
def _(grad_output, weights, weights_offsets, D_offsets, indices, offsets):
    return weights.new_empty((indices.numel(),), dtype=torch.float32)


@fake(*_native("tbe_validate"))
def _(hash_size_cumsum, indices, offsets):
    return indices.new_empty((1,), dtype=torch.int64)


# --------------------------------------------------------------------------------- optimizers


@fake(*_native("multi_tensor_l2norm"), "multi_tensor_l2norm_triton")
def _(tensors, per_tensor=False):
    dtype = _out_dtype(tensors)
    total = tensors[0].new_empty((), dtype=dtype)
    return total, tensors[0].new_empty((len(tensors) if per_tensor else 0,), dtype=dtype)


@fake(*_native("lamb_step", "adam_step", "sgd_step", "lars_step"), "lamb_step_triton",
      "adam_step_triton", "sgd_step_triton", "lars_step_triton")
def _(*args, **kwargs):
    return None


# --------------------------------------------------------------------------------- RNN-T


@fake("rnnt_loss_triton", "rnnt_loss_torch")
def _(logits, targets, logit_lengths, target_lengths, blank, clamp, fused_log_softmax):
    bsz, t_max, u1, _ = logits.shape
    acc = acc_dtype(logits.dtype)
    return (logits.new_empty((bsz,), dtype=acc),
            logits.new_empty((5, bsz, t_max, u1), dtype=acc))


@fake("rnnt_loss_triton_backward", "rnnt_loss_torch_backward")
def _(grad_costs, logits, targets, logit_lengths, target_lengths, planes, costs, blank, clamp,
      fused_log_softmax):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


@fake("rnnt_loss_packed_triton")
def _(logits, targets, logit_lengths, target_lengths, row_base, t_max, u1, blank, clamp,
      fused_log_softmax):
    bsz = logit_lengths.shape[0]
    return (logits.new_empty((bsz,), dtype=torch.float32),
            logits.new_empty((5, bsz, t_max, u1), dtype=torch.float32))


@fake("rnnt_loss_packed_triton_backward")
def _(grad_costs, logits, targets, logit_lengths, target_lengths, row_base, planes, costs, blank,
      clamp, fused_log_softmax):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


@fake("transducer_joint_triton")
def _(f, g, f_lengths, target_lengths, pack_output, packed_rows):
    bsz, t_max, hid = f.shape
    return f.new_empty((packed_rows, hid) if pack_output else (bsz, t_max, g.shape[1], hid))


@fake("transducer_joint_triton_backward")
def _(grad, z, f, g, f_lengths, target_lengths, pack_output):
    return f.new_empty(f.shape), g.new_empty(g.shape)


@fake("transducer_joint_loss_triton", "transducer_joint_loss_torch")
def _(f, g, weight, bias, targets, f_lengths, target_lengths, blank, clamp, reduction, dropout,
      group_bytes, fp32_gemm, needs):
    acc = acc_dtype(f.dtype)
    bsz = f.shape[0]
    per = bsz if reduction == "none" else 1
    need_f, need_g, need_w, need_b = needs

    def maybe(need, shape, dtype):
        return f.new_empty(shape if need else (0,), dtype=dtype if need else acc)
    return (f.new_empty((bsz,) if reduction == "none" else (), dtype=acc),
            maybe(need_f, f.shape, f.dtype), maybe(need_g, g.shape, g.dtype),
            maybe(need_w, (per, *weight.shape), acc), maybe(need_b, (per, weight.shape[0]), acc))


@fake("lstm_cell_triton", "lstm_cell_torch")
def _(gates_x, gates_h, c_prev, save):
    bsz, h4 = gates_x.shape
    return (gates_x.new_empty((bsz, h4 // 4)),
            gates_x.new_empty((bsz, h4 // 4), dtype=acc_dtype(gates_x.dtype)),
            gates_x.new_empty((bsz, h4) if save else (0, h4)))


@fake("lstm_cell_triton_backward", "lstm_cell_torch_backward")
def _(dh, dc, gates, c_prev, c):
    return torch.empty_like(gates), torch.empty_like(c)


@fake("lstm_layer_triton", "lstm_layer_torch")
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, save):
    steps, bsz, _ = x.shape
    hid = w_hh.shape[1]
    return (x.new_empty((steps, bsz, hid)),
            x.new_empty((steps, bsz, hid), dtype=acc_dtype(x.dtype)),
            x.new_empty((steps, bsz, 4 * hid) if save else (0, bsz, 4 * hid)))


@fake("lstm_layer_triton_backward", "lstm_layer_torch_backward")
def _(dy, dc_n, x, h0, c0, w_ih, w_hh, y, c_all, gates):
    return (torch.empty_like(x), torch.empty_like(h0),
            c0.new_empty(c0.shape, dtype=c_all.dtype), torch.empty_like(w_ih),
            torch.empty_like(w_hh), w_ih.new_empty((w_ih.shape[0],)))
