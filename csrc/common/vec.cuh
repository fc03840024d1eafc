#pragma once
// 16-byte vectors: the widest load a thread can issue, for memory-bound kernels.
#include <cstdint>

namespace mlperf_fast {

template <typename T, int N = 16 / sizeof(T)>
struct alignas(16) Vec {
  static constexpr int kSize = N;
  T val[N];
};

template <typename T>
__device__ __forceinline__ bool is_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace mlperf_fast
