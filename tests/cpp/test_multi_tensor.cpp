// The chunk layout and the CPU chunk walk that every multi-tensor op is built on.
#include <ATen/ATen.h>

#include <atomic>
#include <vector>

#include "check.h"
#include "common/multi_tensor.h"

using namespace mlperf_fast;

static void layout_counts_chunks_across_the_list() {
  std::vector<at::Tensor> ts = {at::zeros({10}), at::zeros({0}), at::zeros({25}), at::zeros({8})};
  ChunkLayout layout(ts, 8);
  CHECK(layout.first == (std::vector<int64_t>{0, 2, 2, 6, 7}));
  CHECK(layout.total_chunks() == 7);
  CHECK(layout.chunks(1) == 0);
  CHECK(layout.chunks(2) == 4);
}

static void walk_visits_every_element_once() {
  std::vector<at::Tensor> ts;
  for (int64_t n : {1, 0, 65535, 65536, 65537, 3, 200000}) ts.push_back(at::zeros({n}));
  ChunkLayout layout(ts, 4096);
  std::vector<std::vector<std::atomic<int>>> seen(ts.size());
  for (size_t i = 0; i < ts.size(); ++i)
    seen[i] = std::vector<std::atomic<int>>(static_cast<size_t>(ts[i].numel()));
  for_each_chunk_cpu(
      layout, [&](size_t i) { return ts[i].numel(); },
      [&](size_t i, int64_t chunk, int64_t begin, int64_t end) {
        CHECK(begin == chunk * 4096);
        CHECK(end > begin && end - begin <= 4096);
        for (int64_t k = begin; k < end; ++k) seen[i][k]++;
      });
  for (auto& tensor_seen : seen)
    for (auto& count : tensor_seen) CHECK(count.load() == 1);
}

static void positions_group_by_dtype_in_order() {
  std::vector<at::Tensor> ts = {at::zeros({1}), at::zeros({1}, at::kHalf), at::zeros({1}),
                                at::zeros({1}, at::kHalf), at::zeros({1}, at::kDouble)};
  auto groups = positions_by_dtype(ts);
  CHECK(groups.size() == 3);
  CHECK(groups[0].first == at::kFloat && groups[0].second == (std::vector<int64_t>{0, 2}));
  CHECK(groups[1].first == at::kHalf && groups[1].second == (std::vector<int64_t>{1, 3}));
  CHECK(groups[2].first == at::kDouble && groups[2].second == (std::vector<int64_t>{4}));
}

int main() {
  layout_counts_chunks_across_the_list();
  walk_visits_every_element_once();
  positions_group_by_dtype_in_order();
  return mlperf_fast::testing::failures;
}
