#pragma once
// Table-batched embedding bags: every table of a model in one flat weights buffer, looked up and
// updated in one launch each. The layout follows FBGEMM's table-batched embedding:
//   weights          1-D, every table's rows back to back; table t starts at element
//                    weights_offsets[t] and has rows of D_t = D_offsets[t+1] - D_offsets[t]
//   D_offsets        int64 [T+1]: column of table t in the pooled output [B, D_offsets[T]]
//   hash_size_cumsum int64 [T+1]: table t has hash_size_cumsum[t+1] - hash_size_cumsum[t] rows
//   indices          int32/int64 [N]: row numbers within their table, bags of table 0 first
//   offsets          same dtype, [T*B+1]: bag b of table t is indices[offsets[t*B+b],
//                    offsets[t*B+b+1])
// Pooling is a sum or a mean (an empty bag gives zeros), optionally weighted per index.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace mlperf_fast {

enum TbePooling : int64_t { kTbeSum = 0, kTbeMean = 1 };

// What the backward does with each touched row's combined gradient g (the sum over every bag
// that looked the row up):
enum TbeUpdate : int64_t {
  kTbeWriteGrad = 0,        // grad[row] = g (a dense gradient buffer of the weights' layout)
  kTbeSgd = 1,              // w[row] -= lr * g
  kTbeRowwiseAdagrad = 2,   // m[row] += mean(g^2); w[row] -= lr * g / (sqrt(m[row]) + eps)
};

// Error codes of tbe_validate.
enum TbeError : int64_t {
  kTbeOk = 0,
  kTbeOffsetsStart = 1,     // offsets[0] != 0
  kTbeOffsetsEnd = 2,       // offsets[T*B] != N
  kTbeOffsetsOrder = 3,     // offsets[k+1] < offsets[k]
  kTbeIndexRange = 4,       // index < 0 or >= the table's rows
};
constexpr int64_t kTbeErrorShift = int64_t(1) << 56;
constexpr int64_t kTbeValid = INT64_MAX;

at::Tensor tbe_forward_cpu(const at::Tensor& weights, const at::Tensor& weights_offsets,
                           const at::Tensor& D_offsets, const at::Tensor& indices,
                           const at::Tensor& offsets, int64_t pooling,
                           const c10::optional<at::Tensor>& per_sample_weights, int64_t total_D);
at::Tensor tbe_forward_cuda(const at::Tensor& weights, const at::Tensor& weights_offsets,
                            const at::Tensor& D_offsets, const at::Tensor& indices,
                            const at::Tensor& offsets, int64_t pooling,
                            const c10::optional<at::Tensor>& per_sample_weights, int64_t total_D);

// Applies `update` to every touched row (weights, momentum and grad are written in place).
void tbe_backward_cpu(const at::Tensor& grad_output, const at::Tensor& weights,
                      const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                      const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                      const at::Tensor& offsets, int64_t pooling,
                      const c10::optional<at::Tensor>& per_sample_weights, int64_t update,
                      double lr, double eps, const c10::optional<at::Tensor>& momentum,
                      const c10::optional<at::Tensor>& grad, int64_t num_rows, int64_t max_D);
void tbe_backward_cuda(const at::Tensor& grad_output, const at::Tensor& weights,
                       const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                       const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                       const at::Tensor& offsets, int64_t pooling,
                       const c10::optional<at::Tensor>& per_sample_weights, int64_t update,
                       double lr, double eps, const c10::optional<at::Tensor>& momentum,
                       const c10::optional<at::Tensor>& grad, int64_t num_rows, int64_t max_D);

// d out / d per_sample_weights (sum pooling): for index k of bag (t, b), the dot product of
// grad_output[b, table t's columns] and the row it looked up. float32 [N].
at::Tensor tbe_per_sample_weights_grad_cpu(const at::Tensor& grad_output, const at::Tensor& weights,
                                           const at::Tensor& weights_offsets,
                                           const at::Tensor& D_offsets, const at::Tensor& indices,
                                           const at::Tensor& offsets);
at::Tensor tbe_per_sample_weights_grad_cuda(const at::Tensor& grad_output,
                                            const at::Tensor& weights,
                                            const at::Tensor& weights_offsets,
                                            const at::Tensor& D_offsets, const at::Tensor& indices,
                                            const at::Tensor& offsets);

// int64 [1] on the indices' device: kTbeValid if offsets and indices are well formed, else
// code * kTbeErrorShift + position of a bad entry (of offsets for codes 1-3, of indices for 4).
// One pass over offsets and indices and no synchronization; the caller reads it back.
at::Tensor tbe_validate_cpu(const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                            const at::Tensor& offsets);
at::Tensor tbe_validate_cuda(const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                             const at::Tensor& offsets);

}  // namespace mlperf_fast
