#pragma once
// DLRM's dot interaction. With T = [dense; embeddings] (F + 1 vectors of length D per sample),
// the output row is [dense, T_i . T_j for every i > j in row-major order of the strictly lower
// triangle], of width D + (F + 1) F / 2: the MLCommons reference's bmm + tril gather + cat.
#include <ATen/core/Tensor.h>

#include <tuple>

namespace mlperf_fast {

// Largest F + 1 the kernels hold in one block's shared memory.
constexpr int64_t kDotInteractionMaxVectors = 64;

at::Tensor dot_interaction_forward_cpu(const at::Tensor& dense, const at::Tensor& embeddings);
std::tuple<at::Tensor, at::Tensor> dot_interaction_backward_cpu(const at::Tensor& grad_output,
                                                                const at::Tensor& dense,
                                                                const at::Tensor& embeddings);
at::Tensor dot_interaction_forward_cuda(const at::Tensor& dense, const at::Tensor& embeddings);
std::tuple<at::Tensor, at::Tensor> dot_interaction_backward_cuda(const at::Tensor& grad_output,
                                                                 const at::Tensor& dense,
                                                                 const at::Tensor& embeddings);

}  // namespace mlperf_fast
