#pragma once
// One launcher for every multi-tensor kernel (norms, optimizers): the tensors of up to Depth
// parallel lists are cut into chunks (ChunkLayout), each CUDA block handles one chunk of one
// tensor, and an Op functor says what a block does with it.
//
// The tensor addresses and the block-to-chunk map travel in the kernel's parameters, which may
// hold up to 32764 bytes since CUDA 12.1 on sm_70 and newer: a launch covers up to kMaxTensors
// tensors and kMaxBlocks chunks with no device-side table, so it needs no host-to-device copy
// and is safe to capture in a CUDA graph.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <array>
#include <cstdint>
#include <vector>

#include "common/multi_tensor.h"

namespace mlperf_fast {

template <int Depth>
struct TensorListMeta {
  static constexpr int kMaxTensors = 128;
  static constexpr int kMaxBlocks = 4096;
  void* addr[Depth][kMaxTensors];
  int64_t numel[kMaxTensors];
  int32_t index[kMaxTensors];        // the tensor's position in the caller's lists
  int64_t first_chunk[kMaxTensors];  // global id of the tensor's chunk 0 (ChunkLayout::first)
  uint8_t block_slot[kMaxBlocks];    // which of this launch's tensors a block works on
  int32_t block_chunk[kMaxBlocks];   // which chunk of that tensor
};
static_assert(sizeof(TensorListMeta<6>) < 32000, "kernel parameters are limited to 32764 bytes");
static_assert(TensorListMeta<1>::kMaxTensors <= 256, "block_slot is a uint8_t");

template <int Depth, typename Op, typename... Args>
__global__ void __launch_bounds__(Op::kBlockSize)
    multi_tensor_kernel(const __grid_constant__ TensorListMeta<Depth> meta, int64_t chunk_size,
                        Op op, Args... args) {
  op(meta, meta.block_slot[blockIdx.x], meta.block_chunk[blockIdx.x], chunk_size, args...);
}

namespace detail {

template <int Depth, typename ChunksOf, typename Op, typename... Args>
void launch_over_chunks(const std::array<at::TensorList, Depth>& lists,
                        const std::vector<int64_t>& which, const ChunkLayout& layout,
                        bool reverse, ChunksOf chunks_of, Op op, Args... args) {
  using Meta = TensorListMeta<Depth>;
  if (which.empty()) return;
  const c10::cuda::CUDAGuard guard(lists[0][which[0]].device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Meta meta;
  int slots = 0;
  int blocks = 0;
  auto launch = [&]() {
    multi_tensor_kernel<Depth, Op, Args...>
        <<<blocks, Op::kBlockSize, 0, stream>>>(meta, layout.chunk_size, op, args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  for (size_t w = 0; w < which.size(); ++w) {
    const int64_t i = which[reverse ? which.size() - 1 - w : w];
    const int64_t chunks = chunks_of(i);
    if (chunks == 0) continue;
    for (int d = 0; d < Depth; ++d) meta.addr[d][slots] = lists[d][i].data_ptr();
    meta.numel[slots] = lists[0][i].numel();
    meta.index[slots] = static_cast<int32_t>(i);
    meta.first_chunk[slots] = layout.first[i];
    ++slots;
    for (int64_t k = 0; k < chunks; ++k) {
      meta.block_slot[blocks] = static_cast<uint8_t>(slots - 1);
      meta.block_chunk[blocks] = static_cast<int32_t>(reverse ? chunks - 1 - k : k);
      ++blocks;
      const bool last_chunk = k == chunks - 1;
      if (blocks == Meta::kMaxBlocks || (slots == Meta::kMaxTensors && last_chunk)) {
        launch();
        blocks = 0;
        if (last_chunk) {
          slots = 0;
        } else {  // the tensor goes on in the next launch, from slot 0
          for (int d = 0; d < Depth; ++d) meta.addr[d][0] = meta.addr[d][slots - 1];
          meta.numel[0] = meta.numel[slots - 1];
          meta.index[0] = meta.index[slots - 1];
          meta.first_chunk[0] = meta.first_chunk[slots - 1];
          slots = 1;
        }
      }
    }
  }
  if (blocks > 0) launch();
}

}  // namespace detail

// One block per chunk of each tensor named in `which` (positions in the lists, all of one dtype
// combination that Op expects). Op has `static constexpr int kBlockSize` and
//   __device__ void operator()(const TensorListMeta<Depth>&, int slot, int chunk,
//                              int64_t chunk_size, Args...) const;
template <int Depth, typename Op, typename... Args>
void multi_tensor_apply(const std::array<at::TensorList, Depth>& lists,
                        const std::vector<int64_t>& which, const ChunkLayout& layout, Op op,
                        Args... args) {
  detail::launch_over_chunks<Depth>(
      lists, which, layout, false, [&](int64_t i) { return layout.chunks(i); }, op, args...);
}

// The same chunks, handed out from the last chunk of the last tensor back to the first. A pass
// that follows another over the same data (LAMB's update after its norms, LARS's after the
// weight and gradient norms) starts with what the first pass read last, which the L2 still holds.
template <int Depth, typename Op, typename... Args>
void multi_tensor_apply_reversed(const std::array<at::TensorList, Depth>& lists,
                                 const std::vector<int64_t>& which, const ChunkLayout& layout,
                                 Op op, Args... args) {
  detail::launch_over_chunks<Depth>(
      lists, which, layout, true, [&](int64_t i) { return layout.chunks(i); }, op, args...);
}

}  // namespace mlperf_fast
