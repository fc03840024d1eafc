// multi_tensor_l2norm's CPU kernel through the dispatcher, as Python calls it, against a direct
// float64 computation; and its argument checks.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "check.h"

static std::tuple<at::Tensor, at::Tensor> l2norm(const std::vector<at::Tensor>& ts, bool per) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mlperf_fast::multi_tensor_l2norm", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(at::TensorList, bool)>();
  return op.call(ts, per);
}

static void matches_float64() {
  at::manual_seed(7);
  std::vector<at::Tensor> ts;
  for (int64_t n : {1, 0, 65535, 65536, 65537, 1000003}) ts.push_back(at::randn({n}));
  ts.push_back(at::randn({300, 7}).t());  // non-contiguous
  auto [total, norms] = l2norm(ts, true);
  double sum = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const double expect = ts[i].to(at::kDouble).pow(2).sum().item<double>();
    sum += expect;
    CHECK(std::abs(norms[i].item<double>() - std::sqrt(expect)) <= 1e-6 * std::sqrt(expect) + 1e-30);
  }
  CHECK(std::abs(total.item<double>() - std::sqrt(sum)) <= 1e-6 * std::sqrt(sum));
  CHECK(total.scalar_type() == at::kFloat);
}

static void float64_in_float64_out() {
  auto [total, norms] = l2norm({at::full({4}, 0.5, at::kDouble)}, false);
  CHECK(total.scalar_type() == at::kDouble && total.item<double>() == 1.0);
  CHECK(norms.numel() == 0);
}

static void rejects_integers() {
  CHECK_THROWS(l2norm({at::ones({3}, at::kLong)}, false));
}

int main() {
  matches_float64();
  float64_in_float64_out();
  rejects_integers();
  return mlperf_fast::testing::failures;
}
