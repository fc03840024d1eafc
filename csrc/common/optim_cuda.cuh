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

// Stores updated math weights at k and, under master weights (kMaster), their rounding to the
// low-precision params.
template <bool kMaster, int N, typename T, typename G>
__device__ __forceinline__ void store_weights(T* w, G* model, int64_t k, const T (&pw)[N]) {
  store_n<N>(w, k, pw);
  if constexpr (kMaster) {
    G out[N];
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = static_cast<G>(pw[j]);
    store_n<N>(model, k, out);
  }
}

// Calls body.template run<kPack, Unroll>(k, stride) for groups of Unroll packs that are `stride`
// elements apart, then run<kPack, 1> for the remaining packs and run<1, 1> for the remaining
// elements (and for everything when not `aligned`). A body loads all the packs of a group before
// it stores any: Unroll x (one per list) 16-byte loads in flight per thread, which a plain loop
// cannot give, since the compiler may not move a load above a store that could alias it.
// Two packs a group, for every fused optimizer: with four lists, 8 loads in flight per thread.
constexpr int kPackUnroll = 2;
template <int BlockSize, typename Body, int Unroll = kPackUnroll>
__device__ __forceinline__ void for_each_pack_group(int64_t len, bool aligned, Body& body) {
  int64_t tail = 0;
  if (aligned) {
    const int64_t packs = len / kPack;
    constexpr int64_t kGroup = static_cast<int64_t>(BlockSize) * Unroll;
    int64_t q = threadIdx.x;
    for (; q + (Unroll - 1) * BlockSize < packs; q += kGroup)
      body.template run<kPack, Unroll>(q * kPack, BlockSize * kPack);
    for (; q < packs; q += BlockSize) body.template run<kPack, 1>(q * kPack, 0);
    tail = packs * kPack;
  }
  for (int64_t k = tail + threadIdx.x; k < len; k += BlockSize) body.template run<1, 1>(k, 0);
}

}  // namespace mlperf_fast
