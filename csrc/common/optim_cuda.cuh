#pragma once
// Element access shared by the fused optimizers' CUDA kernels: packs of kPack consecutive elements
// read and written with one instruction per list where every pointer allows it.
#include <cstdint>

namespace mlperf_fast {

constexpr int kPack = 4;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T val[N];
};

template <int N, typename T>
__device__ __forceinline__ bool pack_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * N) == 0;
}

template <int N, typename T>
__device__ __forceinline__ void load_n(T (&dst)[N], const T* src, int64_t k) {
  if constexpr (N == 1) {
    dst[0] = src[k];
  } else {
    const Pack<T, N> p = *reinterpret_cast<const Pack<T, N>*>(src + k);
#pragma unroll
    for (int j = 0; j < N; ++j) dst[j] = p.val[j];
  }
}

template <int N, typename T>
__device__ __forceinline__ void store_n(T* dst, int64_t k, const T (&src)[N]) {
  if constexpr (N == 1) {
    dst[k] = src[0];
  } else {
    Pack<T, N> p;
#pragma unroll
    for (int j = 0; j < N; ++j) p.val[j] = src[j];
    *reinterpret_cast<Pack<T, N>*>(dst + k) = p;
  }
}

// Calls body.template run<kPack>(k) for k = 0, kPack, ... over the packs of [0, len) and
// body.template run<1>(k) for the remaining elements, spread over the block's threads; packs
// only when `aligned` (every list's pointer is aligned to a whole pack).
template <int BlockSize, typename Body>
__device__ __forceinline__ void for_each_element(int64_t len, bool aligned, Body& body) {
  int64_t tail = 0;
  if (aligned) {
    const int64_t packs = len / kPack;
#pragma unroll 2
    for (int64_t q = threadIdx.x; q < packs; q += BlockSize) body.template run<kPack>(q * kPack);
    tail = packs * kPack;
  }
  for (int64_t k = tail + threadIdx.x; k < len; k += BlockSize) body.template run<1>(k);
}

}  // namespace mlperf_fast
