#pragma once
// Host-side machinery shared by every multi-tensor op, on every backend: how a list of tensors
// is cut into fixed-size chunks (the unit of parallel work), and the CPU walk over those chunks.
// Chunks are numbered across the whole list, so per-chunk partial results (norms, sums) land in
// one buffer and are reduced per tensor in a fixed order: deterministic on any number of threads
// or blocks.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace mlperf_fast {

struct ChunkLayout {
  int64_t chunk_size = 0;
  std::vector<int64_t> first;  // first[i]: global id of tensor i's first chunk; first[n]: total

  ChunkLayout(at::TensorList tensors, int64_t chunk_size_) : chunk_size(chunk_size_) {
    first.reserve(tensors.size() + 1);
    int64_t total = 0;
    for (const at::Tensor& t : tensors) {
      first.push_back(total);
      total += (t.numel() + chunk_size - 1) / chunk_size;
    }
    first.push_back(total);
  }

  int64_t total_chunks() const { return first.back(); }
  int64_t chunks(size_t i) const { return first[i + 1] - first[i]; }
};

// Positions of every tensor of `list`, in order: a launch over all of them.
inline std::vector<int64_t> all_positions(at::TensorList list) {
  std::vector<int64_t> out(list.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<int64_t>(i);
  return out;
}

// Positions of the tensors of `list`, grouped by dtype, in order.
inline std::vector<std::pair<at::ScalarType, std::vector<int64_t>>> positions_by_dtype(
    at::TensorList list) {
  std::vector<std::pair<at::ScalarType, std::vector<int64_t>>> groups;
  for (size_t i = 0; i < list.size(); ++i) {
    const at::ScalarType t = list[i].scalar_type();
    auto it = groups.begin();
    while (it != groups.end() && it->first != t) ++it;
    if (it == groups.end()) {
      groups.push_back({t, {}});
      it = groups.end() - 1;
    }
    it->second.push_back(static_cast<int64_t>(i));
  }
  return groups;
}

// The CPU twin of multi_tensor_apply: every (tensor, chunk) pair of a layout is one work item,
// spread over at::parallel_for's threads. fn(i, chunk, begin, end) sees tensor i's elements
// [begin, end); numel_of(i) gives tensor i's length.
template <typename NumelFn, typename Fn>
void for_each_chunk_cpu(const ChunkLayout& layout, NumelFn numel_of, Fn fn) {
  const int64_t total = layout.total_chunks();
  at::parallel_for(0, total, 1, [&](int64_t lo, int64_t hi) {
    size_t i = std::upper_bound(layout.first.begin(), layout.first.end(), lo) -
               layout.first.begin() - 1;
    for (int64_t g = lo; g < hi; ++g) {
      while (layout.first[i + 1] <= g) ++i;
      const int64_t c = g - layout.first[i];
      const int64_t begin = c * layout.chunk_size;
      const int64_t end = std::min(numel_of(i), begin + layout.chunk_size);
      fn(i, c, begin, end);
    }
  });
}

}  // namespace mlperf_fast
