#pragma once
#include <ATen/core/Tensor.h>

#include <tuple>

namespace mlperf_fast {

// Elements per chunk of one CPU work item (the CUDA kernel picks its own: cuda_chunk).
constexpr int64_t kL2NormChunk = 65536;

// Norms come back in float64 when any input is float64, else in float32 (the accumulator type:
// float16 and bfloat16 inputs are summed in float32).
inline at::ScalarType l2norm_out_dtype(at::TensorList tensors) {
  for (const at::Tensor& t : tensors)
    if (t.scalar_type() == at::kDouble) return at::kDouble;
  return at::kFloat;
}

std::tuple<at::Tensor, at::Tensor> multi_tensor_l2norm_cpu(at::TensorList tensors,
                                                           bool per_tensor);
std::tuple<at::Tensor, at::Tensor> multi_tensor_l2norm_cuda(at::TensorList tensors,
                                                            bool per_tensor);

}  // namespace mlperf_fast
