#pragma once
// Non-maximum suppression: the drop-in forms of torchvision.ops.nms / batched_nms and a padded
// multi-image form. The host logic (argument checks, sorting, gathering the results) is shared by
// every device in nms.cpp; each device supplies only the greedy core, NmsKeepFn.
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace mlperf_fast {

// Boxes per bitmask word: the CUDA core's tile edge and the width of one mask word.
constexpr int kNmsBlock = 64;

// The greedy core. Inputs are already sorted by descending score within each image:
//   sorted_boxes  (B, M, 4) contiguous, (x1, y1, x2, y2), any float dtype
//   sorted_labels (B, M) int64, or undefined for class-agnostic NMS (else only equal labels
//                 suppress each other)
//   n_valid       (B,) int64: image b considers positions [0, min(n_valid[b], M)); undefined: all M
// Position j is suppressed by an earlier kept position i when IoU(i, j) > iou_threshold (on the
// CPU the IoU is compared in double, on CUDA against the threshold rounded to float, as
// torchvision does on each device). At most max_out positions are kept per image.
// Returns (keep (B, max_out) int64 positions in kept order, counts (B,) int64); entries of keep
// past counts[b] are unspecified.
using NmsKeepFn = std::tuple<at::Tensor, at::Tensor> (*)(const at::Tensor& sorted_boxes,
                                                        const at::Tensor& sorted_labels,
                                                        const at::Tensor& n_valid,
                                                        double iou_threshold, int64_t max_out);

std::tuple<at::Tensor, at::Tensor> nms_keep_cpu(const at::Tensor& sorted_boxes,
                                                const at::Tensor& sorted_labels,
                                                const at::Tensor& n_valid, double iou_threshold,
                                                int64_t max_out);
std::tuple<at::Tensor, at::Tensor> nms_keep_cuda(const at::Tensor& sorted_boxes,
                                                 const at::Tensor& sorted_labels,
                                                 const at::Tensor& n_valid, double iou_threshold,
                                                 int64_t max_out);

// torchvision.ops.nms (idxs undefined) and batched_nms (idxs given): kept indices, int64,
// by descending score; equal scores in index order (torchvision's stable sort).
at::Tensor nms_host(const at::Tensor& boxes, const at::Tensor& scores,
                    const std::optional<at::Tensor>& idxs, double iou_threshold, NmsKeepFn keep);

// The padded multi-image form; see mlperf_fast/ops/nms.py for the contract.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> nms_padded_host(
    const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& labels,
    double iou_threshold, double score_threshold, int64_t pre_nms_top_k, int64_t max_detections,
    NmsKeepFn keep);

}  // namespace mlperf_fast
