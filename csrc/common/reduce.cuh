#pragma once
// Block-wide reductions used by the multi-tensor kernels.
#include <cuda_runtime.h>

namespace mlperf_fast {

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block; the result is valid in thread 0. Any block size that is a multiple of 32,
// up to 1024. The order of additions is fixed, so the result is deterministic.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T warp_totals[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // warp_totals may still be read by a previous call
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = (threadIdx.x < warps) ? warp_totals[lane] : T(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

}  // namespace mlperf_fast
