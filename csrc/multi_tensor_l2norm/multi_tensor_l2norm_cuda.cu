// L2 norm of every tensor of a list and of the whole list, on the GPU: one pass over the data
// (a block per chunk writes the chunk's sum of squares), then one block per tensor sums its
// chunks in order. No atomics, so the result is the same on every run.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "common/multi_tensor_apply.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "multi_tensor_l2norm/multi_tensor_l2norm.h"

namespace mlperf_fast {

namespace {

template <typename scalar_t, typename acc_t>
struct ChunkSquares {
  static constexpr int kBlockSize = 512;
  __device__ void operator()(const TensorListMeta<1>& meta, int slot, int chunk,
                             int64_t chunk_size, acc_t* partial) const {
    const int64_t begin = chunk * chunk_size;
    const int64_t len = min(chunk_size, meta.numel[slot] - begin);
    const scalar_t* x = static_cast<const scalar_t*>(meta.addr[0][slot]) + begin;
    acc_t acc = 0;
    int64_t tail = 0;
    if (is_aligned<scalar_t>(x)) {
      // kUnroll independent 16-byte loads in flight per thread before any is used: a read-only
      // stream needs that much memory-level parallelism to approach the bandwidth.
      using V = Vec<scalar_t>;
      constexpr int kUnroll = 4;
      const int nvec = static_cast<int>(len / V::kSize);
      const V* xv = reinterpret_cast<const V*>(x);
      for (int base = threadIdx.x; base < nvec; base += kBlockSize * kUnroll) {
        V w[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int v = base + u * kBlockSize;
          if (v < nvec) {
            w[u] = xv[v];
          } else {
#pragma unroll
            for (int j = 0; j < V::kSize; ++j) w[u].val[j] = scalar_t(0);
          }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
          for (int j = 0; j < V::kSize; ++j) {
            const acc_t f = static_cast<acc_t>(w[u].val[j]);
            acc += f * f;
          }
        }
      }
      tail = static_cast<int64_t>(nvec) * V::kSize;
    }
    for (int64_t k = tail + threadIdx.x; k < len; k += kBlockSize) {
      const acc_t f = static_cast<acc_t>(x[k]);
      acc += f * f;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[meta.first_chunk[slot] + chunk] = acc;
  }
};

template <typename acc_t>
struct TensorSquares {
  static constexpr int kBlockSize = 256;
  __device__ void operator()(const TensorListMeta<1>& meta, int slot, int /*chunk*/,
                             int64_t chunk_size, const acc_t* partial, acc_t* squares) const {
    const int64_t chunks = (meta.numel[slot] + chunk_size - 1) / chunk_size;
    const acc_t* p = partial + meta.first_chunk[slot];
    acc_t acc = 0;
    for (int64_t k = threadIdx.x; k < chunks; k += kBlockSize) acc += p[k];
    acc = block_sum(acc);
    if (threadIdx.x == 0) squares[meta.index[slot]] = acc;
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor> multi_tensor_l2norm_cuda(at::TensorList tensors,
                                                            bool per_tensor) {
  check_float_list(tensors, "tensors");
  std::vector<at::Tensor> xs;
  xs.reserve(tensors.size());
  for (const at::Tensor& t : tensors) xs.push_back(t.contiguous());
  const auto dtype = l2norm_out_dtype(tensors);
  const auto opts = xs[0].options().dtype(dtype);
  const int64_t n = static_cast<int64_t>(xs.size());

  const ChunkLayout layout(xs, kL2NormChunk);
  at::Tensor partial = at::empty({layout.total_chunks()}, opts);
  at::Tensor squares = at::zeros({n}, opts);  // empty tensors have no chunks and stay 0
  const std::array<at::TensorList, 1> lists{at::TensorList(xs)};

  AT_DISPATCH_FLOATING_TYPES(dtype, "multi_tensor_l2norm_cuda", [&] {
    using acc_t = scalar_t;
    for (const auto& [type, which] : positions_by_dtype(xs)) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, type, "l2norm_chunks", [&] {
        multi_tensor_apply<1>(lists, which, layout, ChunkSquares<scalar_t, acc_t>{},
                              partial.data_ptr<acc_t>());
      });
    }
    multi_tensor_apply_per_tensor<1>(lists, all_positions(xs), layout, TensorSquares<acc_t>{},
                                     static_cast<const acc_t*>(partial.data_ptr<acc_t>()),
                                     squares.data_ptr<acc_t>());
  });
  at::Tensor total = squares.sum().sqrt();
  at::Tensor norms = per_tensor ? squares.sqrt() : at::empty({0}, opts);
  return {total, norms};
}

TORCH_LIBRARY_IMPL(mlperf_fast, CUDA, m) {
  m.impl("multi_tensor_l2norm", &multi_tensor_l2norm_cuda);
}

}  // namespace mlperf_fast
