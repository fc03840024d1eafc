// L2 norm of every tensor of a list and of the whole list, on the CPU.
#include "multi_tensor_l2norm/multi_tensor_l2norm.h"

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common/checks.h"
#include "common/multi_tensor.h"

namespace mlperf_fast {

namespace {

// Sum of squares of x[0, n) in double, in four independent lanes so the loads pipeline.
template <typename scalar_t>
double sum_squares(const scalar_t* x, int64_t n) {
  double lane[4] = {0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    for (int j = 0; j < 4; ++j) {
      const double v = static_cast<double>(x[k + j]);
      lane[j] += v * v;
    }
  }
  for (; k < n; ++k) {
    const double v = static_cast<double>(x[k]);
    lane[0] += v * v;
  }
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> multi_tensor_l2norm_cpu(at::TensorList tensors,
                                                           bool per_tensor) {
  check_float_list(tensors, "tensors");
  std::vector<at::Tensor> xs;
  xs.reserve(tensors.size());
  for (const at::Tensor& t : tensors) xs.push_back(t.contiguous());

  const ChunkLayout layout(xs, kL2NormChunk);
  std::vector<double> partial(layout.total_chunks());
  for_each_chunk_cpu(
      layout, [&](size_t i) { return xs[i].numel(); },
      [&](size_t i, int64_t c, int64_t begin, int64_t end) {
        AT_DISPATCH_FLOATING_TYPES_AND2(
            at::kHalf, at::kBFloat16, xs[i].scalar_type(), "multi_tensor_l2norm_cpu", [&] {
              partial[layout.first[i] + c] =
                  sum_squares(xs[i].const_data_ptr<scalar_t>() + begin, end - begin);
            });
      });

  const auto dtype = l2norm_out_dtype(tensors);
  const int64_t n = static_cast<int64_t>(xs.size());
  std::vector<double> squares(n, 0.0);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t g = layout.first[i]; g < layout.first[i + 1]; ++g) squares[i] += partial[g];
    total += squares[i];
  }
  at::Tensor total_norm = at::scalar_tensor(std::sqrt(total), at::dtype(at::kDouble)).to(dtype);
  at::Tensor norms = at::empty({per_tensor ? n : 0}, at::dtype(at::kDouble));
  if (per_tensor) {
    double* out = norms.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(squares[i]);
  }
  return {total_norm, norms.to(dtype)};
}

TORCH_LIBRARY_IMPL(mlperf_fast, CPU, m) {
  m.impl("multi_tensor_l2norm", &multi_tensor_l2norm_cpu);
}

}  // namespace mlperf_fast
