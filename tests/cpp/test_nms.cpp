// nms, batched_nms and nms_padded's CPU kernels through the dispatcher, on hand-worked cases;
// and their argument checks.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>
#include <vector>

#include "check.h"

using Padded = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

static at::Tensor nms(const at::Tensor& b, const at::Tensor& s, double thr) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlperf_fast::nms", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(b, s, thr);
}

static at::Tensor batched(const at::Tensor& b, const at::Tensor& s, const at::Tensor& i,
                          double thr) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mlperf_fast::batched_nms", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>();
  return op.call(b, s, i, thr);
}

static Padded padded(const at::Tensor& b, const at::Tensor& s, const std::optional<at::Tensor>& l,
                     double thr, double sthr, int64_t topk, int64_t maxdet) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlperf_fast::nms_padded", "")
                       .typed<Padded(const at::Tensor&, const at::Tensor&,
                                     const std::optional<at::Tensor>&, double, double, int64_t,
                                     int64_t)>();
  return op.call(b, s, l, thr, sthr, topk, maxdet);
}

static std::vector<int64_t> values(const at::Tensor& t) {
  at::Tensor c = t.contiguous().to(at::kLong);
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// Box 0 and 1 overlap with IoU 81/119 = 0.68; box 2 is apart; box 3 equals box 0.
static at::Tensor boxes() {
  return at::tensor(std::vector<float>{0, 0, 10, 10, 1, 1, 11, 11, 50, 50, 60, 60, 0, 0, 10, 10}).view({4, 4});
}

static void greedy_by_score() {
  const at::Tensor s = at::tensor(std::vector<float>{0.9f, 0.95f, 0.5f, 0.9f});
  CHECK((values(nms(boxes(), s, 0.5)) == std::vector<int64_t>{1, 2}));
  CHECK((values(nms(boxes(), s, 0.7)) == std::vector<int64_t>{1, 0, 2}));  // 0 and 3: IoU 1
  CHECK((values(nms(boxes(), s, 1.0)) == std::vector<int64_t>{1, 0, 3, 2}));
  // Equal scores keep index order (stable), as torchvision's sort does.
  CHECK((values(nms(boxes(), at::full({4}, 0.5f), 1.0)) == std::vector<int64_t>{0, 1, 2, 3}));
  CHECK(nms(at::zeros({0, 4}), at::zeros({0}), 0.5).numel() == 0);
}

static void per_class() {
  const at::Tensor s = at::tensor(std::vector<float>{0.9f, 0.95f, 0.5f, 0.8f});
  const at::Tensor idxs = at::tensor(std::vector<int64_t>{0, 1, 0, 0});
  CHECK((values(batched(boxes(), s, idxs, 0.5)) == std::vector<int64_t>{1, 0, 2}));
}

static void padded_form() {
  const at::Tensor b = boxes().unsqueeze(0).repeat({2, 1, 1});
  const at::Tensor s = at::tensor(std::vector<float>{0.9f, 0.95f, 0.5f, 0.8f, 0.1f, 0.2f, 0.3f, 0.4f}).view({2, 4});
  auto [ob, os, ol, oi, oc] = padded(b, s, std::nullopt, 0.5, 0.25, 0, 3);
  CHECK(ob.sizes() == at::IntArrayRef({2, 3, 4}));
  CHECK((values(oc) == std::vector<int64_t>{2, 2}));
  CHECK((values(oi) == std::vector<int64_t>{1, 2, -1, 3, 2, -1}));
  CHECK((values(ol) == std::vector<int64_t>{0, 0, -1, 0, 0, -1}));
}

static void rejects_bad_arguments() {
  CHECK_THROWS(nms(at::zeros({3, 4}), at::zeros({2}), 0.5));
  CHECK_THROWS(nms(at::zeros({3, 5}), at::zeros({3}), 0.5));
  CHECK_THROWS(nms(at::zeros({3, 4}, at::kLong), at::zeros({3}), 0.5));
  CHECK_THROWS(batched(at::zeros({3, 4}), at::zeros({3}), at::zeros({3}), 0.5));
  CHECK_THROWS(padded(at::zeros({3, 4}), at::zeros({3}), std::nullopt, 0.5, 0.0, 0, 0));
}

int main() {
  greedy_by_score();
  per_class();
  padded_form();
  rejects_bad_arguments();
  return mlperf_fast::testing::failures;
}
