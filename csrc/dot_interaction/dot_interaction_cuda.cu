// DLRM's dot interaction on the GPU: one block per sample holds the sample's F + 1 vectors in
// shared memory (as float), so every vector is read from global memory once in each direction.
// Forward: a thread per pair, 4 columns per shared-memory load. Backward: d T_i = sum_j G_ij T_j
// with G the symmetric pair gradient (zero diagonal); a thread computes 4 rows x 4 columns, so
// each loaded T_j serves 4 rows.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/checks.h"
#include "dot_interaction/dot_interaction.h"

namespace mlperf_fast {

namespace {

constexpr int kThreads = 256;
constexpr int kRows = 4;        // rows of d T per thread in the backward
constexpr int64_t kSmemLimit = 48 * 1024;

// Row stride in shared memory: a multiple of 4 floats (16-byte loads) plus 4, so rows start in
// different banks.
__host__ __device__ inline int64_t padded(int64_t D) { return (D + 3) / 4 * 4 + 4; }

// Pair p of the strictly lower triangle, row-major: (i, j) with i * (i - 1) / 2 + j = p.
__device__ inline void pair_of(int p, int* i, int* j) {
  int r = static_cast<int>((1.0f + sqrtf(1.0f + 8.0f * static_cast<float>(p))) * 0.5f);
  while (r * (r - 1) / 2 > p) --r;
  while ((r + 1) * r / 2 <= p) ++r;
  *i = r;
  *j = p - r * (r - 1) / 2;
}

// Loads sample b's vectors (dense first) into shared memory as float, zero-padding each row.
template <typename scalar_t>
__device__ void load_sample(const scalar_t* __restrict__ dense, const scalar_t* __restrict__ emb,
                            int64_t b, int n, int64_t D, float* __restrict__ T) {
  const int64_t Dp = padded(D);
  const scalar_t* dsrc = dense + b * D;
  const scalar_t* esrc = emb + b * (n - 1) * D;
  for (int64_t e = threadIdx.x; e < n * Dp; e += blockDim.x) {
    const int64_t i = e / Dp, k = e % Dp;
    float v = 0.0f;
    if (k < D) v = static_cast<float>(i == 0 ? dsrc[k] : esrc[(i - 1) * D + k]);
    T[e] = v;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    dot_interaction_forward_kernel(const scalar_t* __restrict__ dense,
                                   const scalar_t* __restrict__ emb, int n, int64_t D,
                                   scalar_t* __restrict__ out) {
  extern __shared__ float4 smem_f4[];
  float* T = reinterpret_cast<float*>(smem_f4);
  const int64_t b = blockIdx.x;
  const int64_t Dp = padded(D);
  const int pairs = n * (n - 1) / 2;
  const int64_t width = D + pairs;
  load_sample(dense, emb, b, n, D, T);
  __syncthreads();
  scalar_t* dst = out + b * width;
  for (int64_t k = threadIdx.x; k < D; k += blockDim.x) dst[k] = dense[b * D + k];
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    int i, j;
    pair_of(p, &i, &j);
    const float4* ti = reinterpret_cast<const float4*>(T + i * Dp);
    const float4* tj = reinterpret_cast<const float4*>(T + j * Dp);
    float acc = 0.0f;
    for (int64_t k = 0; k < (D + 3) / 4; ++k) {
      const float4 x = ti[k], y = tj[k];
      acc += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
    }
    dst[D + p] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    dot_interaction_backward_kernel(const scalar_t* __restrict__ grad,
                                    const scalar_t* __restrict__ dense,
                                    const scalar_t* __restrict__ emb, int n, int64_t D,
                                    scalar_t* __restrict__ d_dense, scalar_t* __restrict__ d_emb) {
  extern __shared__ float4 smem_f4[];
  float* T = reinterpret_cast<float*>(smem_f4);
  const int64_t b = blockIdx.x;
  const int64_t Dp = padded(D);
  const int pairs = n * (n - 1) / 2;
  const int rows_padded = (n + kRows - 1) / kRows * kRows;
  float* G = T + n * Dp;  // [rows_padded][n], symmetric, zero diagonal and padding
  const scalar_t* g = grad + b * (D + pairs);
  load_sample(dense, emb, b, n, D, T);
  for (int e = threadIdx.x; e < rows_padded * n; e += blockDim.x) G[e] = 0.0f;
  __syncthreads();
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    int i, j;
    pair_of(p, &i, &j);
    const float v = static_cast<float>(g[D + p]);
    G[i * n + j] = v;
    G[j * n + i] = v;
  }
  __syncthreads();
  const int64_t groups = (D + 3) / 4;  // 4 columns each
  const int64_t tasks = static_cast<int64_t>(rows_padded / kRows) * groups;
  for (int64_t task = threadIdx.x; task < tasks; task += blockDim.x) {
    const int i0 = static_cast<int>(task / groups) * kRows;
    const int64_t c = task % groups;
    float4 acc[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[r] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int j = 0; j < n; ++j) {
      const float4 t = reinterpret_cast<const float4*>(T + j * Dp)[c];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float w = G[(i0 + r) * n + j];
        acc[r].x += w * t.x;
        acc[r].y += w * t.y;
        acc[r].z += w * t.z;
        acc[r].w += w * t.w;
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int i = i0 + r;
      if (i >= n) break;
      const float vals[4] = {acc[r].x, acc[r].y, acc[r].z, acc[r].w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t k = c * 4 + q;
        if (k >= D) break;
        if (i == 0) {
          d_dense[b * D + k] = static_cast<scalar_t>(vals[q] + static_cast<float>(g[k]));
        } else {
          d_emb[(b * (n - 1) + i - 1) * D + k] = static_cast<scalar_t>(vals[q]);
        }
      }
    }
  }
}

size_t forward_smem(int64_t n, int64_t D) { return sizeof(float) * n * padded(D); }
size_t backward_smem(int64_t n, int64_t D) {
  const int64_t rows_padded = (n + kRows - 1) / kRows * kRows;
  return sizeof(float) * (n * padded(D) + rows_padded * n);
}

bool fits(const at::Tensor& dense, const at::Tensor& embeddings) {
  const int64_t n = embeddings.size(1) + 1, D = dense.size(1);
  return dense.scalar_type() != at::kDouble && n <= kDotInteractionMaxVectors &&
         static_cast<int64_t>(backward_smem(n, D)) <= kSmemLimit;
}

}  // namespace

at::Tensor dot_interaction_forward_cuda(const at::Tensor& dense, const at::Tensor& embeddings) {
  // Shapes beyond one block's shared memory, and float64, take ATen's batched matmul.
  if (!fits(dense, embeddings)) return dot_interaction_forward_cpu(dense, embeddings);
  const c10::cuda::CUDAGuard guard(dense.device());
  const at::Tensor x = dense.contiguous(), e = embeddings.contiguous();
  const int64_t B = x.size(0), D = x.size(1);
  const int n = static_cast<int>(e.size(1) + 1);
  at::Tensor out = at::empty({B, D + n * (n - 1) / 2}, x.options());
  if (B == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "dot_interaction_forward_cuda", [&] {
    dot_interaction_forward_kernel<scalar_t><<<B, kThreads, forward_smem(n, D), stream>>>(
        x.const_data_ptr<scalar_t>(), e.const_data_ptr<scalar_t>(), n, D,
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> dot_interaction_backward_cuda(const at::Tensor& grad_output,
                                                                 const at::Tensor& dense,
                                                                 const at::Tensor& embeddings) {
  if (!fits(dense, embeddings)) return dot_interaction_backward_cpu(grad_output, dense, embeddings);
  const c10::cuda::CUDAGuard guard(dense.device());
  const at::Tensor x = dense.contiguous(), e = embeddings.contiguous();
  const at::Tensor g = grad_output.contiguous();
  const int64_t B = x.size(0), D = x.size(1);
  const int n = static_cast<int>(e.size(1) + 1);
  at::Tensor d_dense = at::empty_like(x), d_emb = at::empty_like(e);
  if (B == 0) return {d_dense, d_emb};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "dot_interaction_backward_cuda", [&] {
    dot_interaction_backward_kernel<scalar_t><<<B, kThreads, backward_smem(n, D), stream>>>(
        g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), e.const_data_ptr<scalar_t>(),
        n, D, d_dense.data_ptr<scalar_t>(), d_emb.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {d_dense, d_emb};
}

TORCH_LIBRARY_IMPL(mlperf_fast, CUDA, m) {
  m.impl("dot_interaction_forward", &dot_interaction_forward_cuda);
  m.impl("dot_interaction_backward", &dot_interaction_backward_cuda);
}

}  // namespace mlperf_fast
