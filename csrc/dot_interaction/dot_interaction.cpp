// DLRM's dot interaction on the CPU, through ATen's batched matmul in the accumulation dtype.
#include "dot_interaction/dot_interaction.h"

#include <ATen/Functions.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

namespace mlperf_fast {

namespace {

at::ScalarType acc_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Positions i * n + j of the strictly lower triangle of an n x n matrix, row-major.
at::Tensor lower_pairs(int64_t n, const at::TensorOptions& opts) {
  at::Tensor tri = at::tril_indices(n, n, -1, opts.dtype(at::kLong));
  return at::add(at::mul(tri.select(0, 0), n), tri.select(0, 1));
}

}  // namespace

at::Tensor dot_interaction_forward_cpu(const at::Tensor& dense, const at::Tensor& embeddings) {
  const auto acc = acc_dtype(dense);
  at::Tensor T = at::cat({dense.unsqueeze(1), embeddings}, 1).to(acc);
  at::Tensor Z = at::bmm(T, T.transpose(1, 2));
  const int64_t n = T.size(1);
  at::Tensor pairs = Z.reshape({T.size(0), n * n}).index_select(1, lower_pairs(n, dense.options()));
  return at::cat({dense, pairs.to(dense.scalar_type())}, 1);
}

std::tuple<at::Tensor, at::Tensor> dot_interaction_backward_cpu(const at::Tensor& grad_output,
                                                                const at::Tensor& dense,
                                                                const at::Tensor& embeddings) {
  const auto acc = acc_dtype(dense);
  const int64_t B = dense.size(0), D = dense.size(1), n = embeddings.size(1) + 1;
  at::Tensor T = at::cat({dense.unsqueeze(1), embeddings}, 1).to(acc);
  at::Tensor g = grad_output.narrow(1, D, grad_output.size(1) - D).to(acc);
  // Z_ij = T_i . T_j is symmetric: the gradient of a pair reaches both of its vectors.
  at::Tensor G = at::zeros({B, n * n}, T.options());
  G.index_copy_(1, lower_pairs(n, dense.options()), g);
  G = G.view({B, n, n});
  G = at::add(G, G.transpose(1, 2));
  at::Tensor dT = at::bmm(G, T);
  at::Tensor d_dense = at::add(grad_output.narrow(1, 0, D).to(acc), dT.select(1, 0));
  at::Tensor d_emb = dT.narrow(1, 1, n - 1);
  return {d_dense.to(dense.scalar_type()), d_emb.to(embeddings.scalar_type()).contiguous()};
}

TORCH_LIBRARY_IMPL(mlperf_fast, CPU, m) {
  m.impl("dot_interaction_forward", &dot_interaction_forward_cpu);
  m.impl("dot_interaction_backward", &dot_interaction_backward_cpu);
}

}  // namespace mlperf_fast
