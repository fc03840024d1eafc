// Non-maximum suppression: host logic shared by every device, and the CPU greedy core.
#include "nms/nms.h"

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "common/checks.h"

namespace mlperf_fast {

namespace {

bool is_integer_dtype(at::ScalarType t) {
  return at::isIntegralType(t, /*includeBool=*/false);
}

void check_boxes_scores(const at::Tensor& boxes, const at::Tensor& scores, int64_t batch_dims) {
  MF_CHECK_VALUE(boxes.layout() == at::kStrided, "boxes", "must be a dense tensor");
  MF_CHECK_VALUE(scores.layout() == at::kStrided, "scores", "must be a dense tensor");
  MF_CHECK_VALUE(boxes.dim() == batch_dims + 2 && boxes.size(-1) == 4, "boxes", "must have shape ",
                 batch_dims ? "(B, N, 4)" : "(N, 4)", ", got ", boxes.sizes());
  MF_CHECK_VALUE(scores.dim() == batch_dims + 1, "scores", "must have shape ",
                 batch_dims ? "(B, N)" : "(N,)", ", got ", scores.sizes());
  MF_CHECK_VALUE(scores.sizes() == boxes.sizes().slice(0, batch_dims + 1), "scores",
                 "has shape ", scores.sizes(), " but 'boxes' has shape ", boxes.sizes());
  MF_CHECK_TYPE(is_float_dtype(boxes.scalar_type()), "boxes", "has dtype ", boxes.scalar_type(),
                "; expected float32, float64, float16 or bfloat16");
  MF_CHECK_TYPE(is_float_dtype(scores.scalar_type()), "scores", "has dtype ",
                scores.scalar_type(), "; expected float32, float64, float16 or bfloat16");
  MF_CHECK_VALUE(scores.device() == boxes.device(), "scores", "is on ", scores.device(),
                 " but 'boxes' is on ", boxes.device());
}

void check_labels(const at::Tensor& labels, const at::Tensor& scores, const char* name) {
  MF_CHECK_VALUE(labels.layout() == at::kStrided, name, "must be a dense tensor");
  MF_CHECK_TYPE(is_integer_dtype(labels.scalar_type()), name, "has dtype ", labels.scalar_type(),
                "; expected an integer dtype");
  MF_CHECK_VALUE(labels.sizes() == scores.sizes(), name, "has shape ", labels.sizes(),
                 " but 'scores' has shape ", scores.sizes());
  MF_CHECK_VALUE(labels.device() == scores.device(), name, "is on ", labels.device(),
                 " but 'scores' is on ", scores.device());
}

// For a float IoU, (double)iou > t exactly when iou > (the largest float <= t): the comparison
// torchvision makes in double, done in float.
template <typename acc_t>
acc_t threshold_in(double t) {
  if constexpr (std::is_same_v<acc_t, double>) {
    return t;
  } else {
    acc_t f = static_cast<acc_t>(t);
    if (static_cast<double>(f) > t) f = std::nextafter(f, -std::numeric_limits<acc_t>::infinity());
    return f;
  }
}

// Class-agnostic greedy pass over boxes 0..n-1 in score order, corners and areas one array each.
// The IoU is torchvision's CPU expression, in the same order, so kept sets agree bit for bit. The
// inner loop is branch-free, so the compiler vectorizes it: boxes already suppressed are tested
// again, which changes nothing.
template <typename acc_t>
int64_t greedy_soa(const acc_t* x1, const acc_t* y1, const acc_t* x2, const acc_t* y2,
                   const acc_t* areas, int64_t n, acc_t threshold, int64_t max_out,
                   int64_t* keep, uint8_t* suppressed) {
  std::fill(suppressed, suppressed + n, 0);
  int64_t count = 0;
  for (int64_t i = 0; i < n && count < max_out; ++i) {
    if (suppressed[i]) continue;
    keep[count++] = i;
    const acc_t ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = areas[i];
    for (int64_t j = i + 1; j < n; ++j) {
      const acc_t xx1 = std::max(ix1, x1[j]);
      const acc_t yy1 = std::max(iy1, y1[j]);
      const acc_t xx2 = std::min(ix2, x2[j]);
      const acc_t yy2 = std::min(iy2, y2[j]);
      const acc_t w = std::max(static_cast<acc_t>(0), xx2 - xx1);
      const acc_t h = std::max(static_cast<acc_t>(0), yy2 - yy1);
      const acc_t inter = w * h;
      const acc_t ovr = inter / (iarea + areas[j] - inter);
      suppressed[j] |= static_cast<uint8_t>(ovr > threshold);
    }
  }
  return count;
}

// One image: positions [0, n) of boxes sorted by descending score; areas in the boxes' dtype
// (float32 for float16/bfloat16). With labels, boxes suppress only boxes of their label, so each
// label's boxes go through the greedy pass alone and the kept positions are merged back in
// score order: the same result as one pass that skips other labels, at a fraction of the cost.
template <typename scalar_t>
int64_t greedy_cpu(const scalar_t* boxes, const int64_t* labels, int64_t n, double iou_threshold,
                   int64_t max_out, int64_t* keep) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (labels) {
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return labels[a] < labels[b]; });
  }
  std::vector<acc_t> c(5 * n);  // x1, y1, x2, y2, area, in `order`
  acc_t *x1 = c.data(), *y1 = x1 + n, *x2 = y1 + n, *y2 = x2 + n, *areas = y2 + n;
  for (int64_t k = 0; k < n; ++k) {
    const scalar_t* box = boxes + 4 * order[k];
    x1[k] = static_cast<acc_t>(box[0]);
    y1[k] = static_cast<acc_t>(box[1]);
    x2[k] = static_cast<acc_t>(box[2]);
    y2[k] = static_cast<acc_t>(box[3]);
    areas[k] = (x2[k] - x1[k]) * (y2[k] - y1[k]);
  }
  const acc_t threshold = threshold_in<acc_t>(iou_threshold);
  std::vector<uint8_t> suppressed(n);
  if (!labels) return greedy_soa(x1, y1, x2, y2, areas, n, threshold, max_out, keep, suppressed.data());

  std::vector<int64_t> local(n), kept;
  kept.reserve(n);
  for (int64_t begin = 0; begin < n;) {
    int64_t end = begin + 1;
    while (end < n && labels[order[end]] == labels[order[begin]]) ++end;
    const int64_t m = end - begin;
    const int64_t got = greedy_soa(x1 + begin, y1 + begin, x2 + begin, y2 + begin, areas + begin,
                                   m, threshold, m, local.data(), suppressed.data());
    for (int64_t k = 0; k < got; ++k) kept.push_back(order[begin + local[k]]);
    begin = end;
  }
  std::sort(kept.begin(), kept.end());
  const int64_t count = std::min<int64_t>(static_cast<int64_t>(kept.size()), max_out);
  std::copy(kept.begin(), kept.begin() + count, keep);
  return count;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> nms_keep_cpu(const at::Tensor& sorted_boxes,
                                                const at::Tensor& sorted_labels,
                                                const at::Tensor& n_valid, double iou_threshold,
                                                int64_t max_out) {
  const int64_t batch = sorted_boxes.size(0), m = sorted_boxes.size(1);
  at::Tensor keep = at::zeros({batch, max_out}, sorted_boxes.options().dtype(at::kLong));
  at::Tensor counts = at::zeros({batch}, keep.options());
  if (batch == 0 || m == 0 || max_out == 0) return {keep, counts};
  const int64_t* labels = sorted_labels.defined() ? sorted_labels.const_data_ptr<int64_t>() : nullptr;
  const int64_t* valid = n_valid.defined() ? n_valid.const_data_ptr<int64_t>() : nullptr;
  int64_t* keep_ptr = keep.data_ptr<int64_t>();
  int64_t* count_ptr = counts.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sorted_boxes.scalar_type(),
                                  "nms_keep_cpu", [&] {
    const scalar_t* boxes = sorted_boxes.const_data_ptr<scalar_t>();
    at::parallel_for(0, batch, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        const int64_t n = valid ? std::clamp<int64_t>(valid[b], 0, m) : m;
        count_ptr[b] = greedy_cpu(boxes + b * m * 4, labels ? labels + b * m : nullptr, n,
                                  iou_threshold, max_out, keep_ptr + b * max_out);
      }
    });
  });
  return {keep, counts};
}

at::Tensor nms_host(const at::Tensor& boxes, const at::Tensor& scores,
                    const std::optional<at::Tensor>& idxs, double iou_threshold, NmsKeepFn keep) {
  check_boxes_scores(boxes, scores, 0);
  if (idxs.has_value()) check_labels(*idxs, scores, "idxs");
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  // Stable, as torchvision's kernels sort (since 0.12): equal scores keep their index order.
  at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous().unsqueeze(0);
  at::Tensor sorted_labels;
  if (idxs.has_value())
    sorted_labels = idxs->to(at::kLong).index_select(0, order).contiguous().unsqueeze(0);
  auto [pos, counts] = keep(sorted_boxes, sorted_labels, at::Tensor(), iou_threshold, n);
  const int64_t count = counts.item<int64_t>();  // the one sync: the result's length
  return order.index_select(0, pos.select(0, 0).narrow(0, 0, count));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> nms_padded_host(
    const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& labels,
    double iou_threshold, double score_threshold, int64_t pre_nms_top_k, int64_t max_detections,
    NmsKeepFn keep) {
  check_boxes_scores(boxes, scores, 1);
  if (labels.has_value()) check_labels(*labels, scores, "labels");
  const int64_t batch = boxes.size(0), n = boxes.size(1);
  const int64_t m = pre_nms_top_k > 0 ? std::min(pre_nms_top_k, n) : n;
  const int64_t k = max_detections > 0 ? std::min(max_detections, m) : m;
  const auto long_opts = boxes.options().dtype(at::kLong);

  // Candidates: score > threshold (NaN never), the top m by score, ties by lower index (stable).
  at::Tensor valid = scores.gt(score_threshold);
  at::Tensor masked = scores.masked_fill(valid.logical_not(),
                                         -std::numeric_limits<double>::infinity());
  auto [sorted_scores, order] = masked.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true);
  order = order.narrow(1, 0, m);
  sorted_scores = sorted_scores.narrow(1, 0, m);
  at::Tensor n_valid = valid.sum(1, /*keepdim=*/false, at::kLong).clamp_max(m);
  at::Tensor sorted_boxes =
      boxes.gather(1, order.unsqueeze(-1).expand({batch, m, 4})).contiguous();
  at::Tensor sorted_labels;
  if (labels.has_value())
    sorted_labels = labels->to(at::kLong).gather(1, order).contiguous();

  auto [pos, counts] = keep(sorted_boxes, sorted_labels, n_valid, iou_threshold, k);
  at::Tensor slot = at::arange(k, long_opts).unsqueeze(0).lt(counts.unsqueeze(1));  // (B, K)
  at::Tensor empty_slot = slot.logical_not();
  pos = pos.masked_fill(empty_slot, 0);
  at::Tensor out_boxes = sorted_boxes.gather(1, pos.unsqueeze(-1).expand({batch, k, 4}))
                             .masked_fill(empty_slot.unsqueeze(-1), 0);
  at::Tensor out_scores = sorted_scores.gather(1, pos).masked_fill(empty_slot, 0);
  at::Tensor out_index = order.gather(1, pos).masked_fill(empty_slot, -1);
  at::Tensor out_labels = labels.has_value()
                              ? sorted_labels.gather(1, pos).masked_fill(empty_slot, -1)
                              : at::zeros({batch, k}, long_opts).masked_fill(empty_slot, -1);
  return {out_boxes, out_scores, out_labels, out_index, counts};
}

namespace {

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  return nms_host(boxes, scores, std::nullopt, iou_threshold, &nms_keep_cpu);
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                           const at::Tensor& idxs, double iou_threshold) {
  return nms_host(boxes, scores, idxs, iou_threshold, &nms_keep_cpu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> nms_padded_cpu(
    const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& labels,
    double iou_threshold, double score_threshold, int64_t pre_nms_top_k, int64_t max_detections) {
  return nms_padded_host(boxes, scores, labels, iou_threshold, score_threshold, pre_nms_top_k,
                         max_detections, &nms_keep_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(mlperf_fast, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
  m.impl("nms_padded", &nms_padded_cpu);
}

}  // namespace mlperf_fast
