// Table-batched embedding bags on the CPU: forward, backward fused with SGD or row-wise Adagrad
// (or writing the gradient), per-sample-weight gradient and the index check.
#include "table_batched_embedding/table_batched_embedding.h"

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/checks.h"

namespace mlperf_fast {

namespace {

// The small per-table tables (T+1 entries), read on the host.
struct TableMeta {
  int64_t T, B, total_D;
  std::vector<int64_t> w_off, d_off;
};

TableMeta table_meta(const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                     const at::Tensor& offsets) {
  TableMeta m;
  at::Tensor w = weights_offsets.to(at::kCPU, at::kLong).contiguous();
  at::Tensor d = D_offsets.to(at::kCPU, at::kLong).contiguous();
  m.T = w.numel();
  m.w_off.assign(w.const_data_ptr<int64_t>(), w.const_data_ptr<int64_t>() + m.T);
  m.d_off.assign(d.const_data_ptr<int64_t>(), d.const_data_ptr<int64_t>() + m.T + 1);
  m.B = m.T > 0 ? (offsets.numel() - 1) / m.T : 0;
  m.total_D = m.d_off[m.T];
  return m;
}

// A bag's [begin, end) clamped to the indices, so malformed offsets never read outside them.
template <typename index_t>
inline void bag_range(const index_t* offsets, int64_t bag, int64_t n, int64_t* begin,
                      int64_t* end) {
  const int64_t b0 = std::min<int64_t>(std::max<int64_t>(offsets[bag], 0), n);
  const int64_t b1 = std::min<int64_t>(std::max<int64_t>(offsets[bag + 1], 0), n);
  *begin = b0;
  *end = std::max(b0, b1);
}

}  // namespace

at::Tensor tbe_forward_cpu(const at::Tensor& weights, const at::Tensor& weights_offsets,
                           const at::Tensor& D_offsets, const at::Tensor& indices,
                           const at::Tensor& offsets, int64_t pooling,
                           const c10::optional<at::Tensor>& per_sample_weights, int64_t total_D) {
  const TableMeta m = table_meta(weights_offsets, D_offsets, offsets);
  MF_CHECK_VALUE(m.total_D == total_D, "total_D", total_D, " but D_offsets ends at ", m.total_D);
  at::Tensor out = at::zeros({m.B, m.total_D}, weights.options());
  const int64_t n = indices.numel();
  const int64_t rows_total = weights.numel();
  at::Tensor psw;
  if (per_sample_weights.has_value()) psw = per_sample_weights->to(at::kFloat).contiguous();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_forward_cpu", [&] {
    const index_t* idx = indices.const_data_ptr<index_t>();
    const index_t* off = offsets.const_data_ptr<index_t>();
    const float* sw = psw.defined() ? psw.const_data_ptr<float>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                    "tbe_forward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* w = weights.const_data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      at::parallel_for(0, m.T * m.B, 64, [&](int64_t lo, int64_t hi) {
        std::vector<acc_t> acc;
        for (int64_t bag = lo; bag < hi; ++bag) {
          const int64_t t = bag / m.B, b = bag % m.B;
          const int64_t D = m.d_off[t + 1] - m.d_off[t];
          acc.assign(D, acc_t(0));
          int64_t begin, end;
          bag_range(off, bag, n, &begin, &end);
          for (int64_t k = begin; k < end; ++k) {
            const int64_t base = m.w_off[t] + static_cast<int64_t>(idx[k]) * D;
            // Rows outside the buffer (an unchecked bad index) contribute nothing.
            if (idx[k] < 0 || base + D > rows_total) continue;
            const acc_t s = sw ? static_cast<acc_t>(sw[k]) : acc_t(1);
            for (int64_t d = 0; d < D; ++d) acc[d] += s * static_cast<acc_t>(w[base + d]);
          }
          const acc_t scale =
              (pooling == kTbeMean && end > begin) ? acc_t(1) / acc_t(end - begin) : acc_t(1);
          scalar_t* dst = o + b * m.total_D + m.d_off[t];
          for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<scalar_t>(acc[d] * scale);
        }
      });
    });
  });
  return out;
}

void tbe_backward_cpu(const at::Tensor& grad_output, const at::Tensor& weights,
                      const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                      const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                      const at::Tensor& offsets, int64_t pooling,
                      const c10::optional<at::Tensor>& per_sample_weights, int64_t update,
                      double lr, double eps, const c10::optional<at::Tensor>& momentum,
                      const c10::optional<at::Tensor>& grad, int64_t num_rows, int64_t max_D) {
  const TableMeta m = table_meta(weights_offsets, D_offsets, offsets);
  at::Tensor hs = hash_size_cumsum.to(at::kCPU, at::kLong).contiguous();
  const int64_t* hcum = hs.const_data_ptr<int64_t>();
  const int64_t rows_total = hcum[m.T];
  MF_CHECK_VALUE(rows_total == num_rows, "num_rows", num_rows, " but hash_size_cumsum ends at ",
                 rows_total);
  (void)max_D;
  const int64_t n = indices.numel();
  at::Tensor go = grad_output.contiguous();
  at::Tensor psw;
  if (per_sample_weights.has_value()) psw = per_sample_weights->to(at::kFloat).contiguous();

  // Each index's global row (its table's first row + the index; rows_total for a bad one) and
  // bag, then a stable sort by row: duplicates become runs, each in the order of the indices,
  // so the combined gradient is summed in the same order on every call.
  std::vector<int64_t> key(n, rows_total), bag_of(n, 0);
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_backward_cpu_keys", [&] {
    const index_t* idx = indices.const_data_ptr<index_t>();
    const index_t* off = offsets.const_data_ptr<index_t>();
    for (int64_t bag = 0; bag < m.T * m.B; ++bag) {
      const int64_t t = bag / m.B;
      int64_t begin, end;
      bag_range(off, bag, n, &begin, &end);
      for (int64_t k = begin; k < end; ++k) {
        bag_of[k] = bag;
        const int64_t i = idx[k];
        if (i >= 0 && i < hcum[t + 1] - hcum[t]) key[k] = hcum[t] + i;
      }
    }
  });
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return key[a] < key[b]; });
  // Bad indices sort last (key rows_total) and are left out of the runs.
  std::vector<int64_t> run_start;
  int64_t valid_end = 0;
  for (; valid_end < n && key[order[valid_end]] != rows_total; ++valid_end) {
    const int64_t k = valid_end;
    if (k == 0 || key[order[k]] != key[order[k - 1]]) run_start.push_back(k);
  }
  const int64_t runs = static_cast<int64_t>(run_start.size());
  if (runs == 0) return;
  run_start.push_back(valid_end);

  // Bag sizes, for mean pooling.
  std::vector<int64_t> bag_len(m.T * m.B);
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_backward_cpu_len", [&] {
    const index_t* off = offsets.const_data_ptr<index_t>();
    for (int64_t bag = 0; bag < m.T * m.B; ++bag) {
      int64_t begin, end;
      bag_range(off, bag, n, &begin, &end);
      bag_len[bag] = end - begin;
    }
  });
  const float* sw = psw.defined() ? psw.const_data_ptr<float>() : nullptr;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                  "tbe_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = go.const_data_ptr<scalar_t>();
    scalar_t* w = weights.data_ptr<scalar_t>();
    scalar_t* gw = grad.has_value() ? grad->data_ptr<scalar_t>() : nullptr;
    float* mom = momentum.has_value() ? momentum->data_ptr<float>() : nullptr;
    // Runs are distinct rows: they are updated in parallel without races.
    at::parallel_for(0, runs, 16, [&](int64_t lo, int64_t hi) {
      std::vector<acc_t> acc;
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t first = order[run_start[r]];
        const int64_t t = bag_of[first] / m.B;
        const int64_t D = m.d_off[t + 1] - m.d_off[t];
        const int64_t row = key[first] - hcum[t];
        acc.assign(D, acc_t(0));
        for (int64_t k = run_start[r]; k < run_start[r + 1]; ++k) {
          const int64_t p = order[k];
          const int64_t bag = bag_of[p];
          acc_t s = sw ? static_cast<acc_t>(sw[p]) : acc_t(1);
          if (pooling == kTbeMean) s /= static_cast<acc_t>(bag_len[bag]);
          const scalar_t* src = g + (bag % m.B) * m.total_D + m.d_off[t];
          for (int64_t d = 0; d < D; ++d) acc[d] += s * static_cast<acc_t>(src[d]);
        }
        const int64_t base = m.w_off[t] + row * D;
        if (update == kTbeWriteGrad) {
          for (int64_t d = 0; d < D; ++d) gw[base + d] = static_cast<scalar_t>(acc[d]);
        } else if (update == kTbeSgd) {
          for (int64_t d = 0; d < D; ++d)
            w[base + d] = static_cast<scalar_t>(static_cast<acc_t>(w[base + d]) -
                                                static_cast<acc_t>(lr) * acc[d]);
        } else {
          acc_t sq = 0;
          for (int64_t d = 0; d < D; ++d) sq += acc[d] * acc[d];
          const int64_t mrow = hcum[t] + row;
          const acc_t mnew = static_cast<acc_t>(mom[mrow]) + sq / static_cast<acc_t>(D);
          mom[mrow] = static_cast<float>(mnew);
          const acc_t step = static_cast<acc_t>(lr) / (std::sqrt(mnew) + static_cast<acc_t>(eps));
          for (int64_t d = 0; d < D; ++d)
            w[base + d] = static_cast<scalar_t>(static_cast<acc_t>(w[base + d]) - step * acc[d]);
        }
      }
    });
  });
}

at::Tensor tbe_per_sample_weights_grad_cpu(const at::Tensor& grad_output, const at::Tensor& weights,
                                           const at::Tensor& weights_offsets,
                                           const at::Tensor& D_offsets, const at::Tensor& indices,
                                           const at::Tensor& offsets) {
  const TableMeta m = table_meta(weights_offsets, D_offsets, offsets);
  const int64_t n = indices.numel();
  const int64_t rows_total = weights.numel();
  at::Tensor out = at::zeros({n}, weights.options().dtype(at::kFloat));
  at::Tensor go = grad_output.contiguous();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_psw_grad_cpu", [&] {
    const index_t* idx = indices.const_data_ptr<index_t>();
    const index_t* off = offsets.const_data_ptr<index_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                    "tbe_psw_grad_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* w = weights.const_data_ptr<scalar_t>();
      const scalar_t* g = go.const_data_ptr<scalar_t>();
      float* o = out.data_ptr<float>();
      at::parallel_for(0, m.T * m.B, 64, [&](int64_t lo, int64_t hi) {
        for (int64_t bag = lo; bag < hi; ++bag) {
          const int64_t t = bag / m.B, b = bag % m.B;
          const int64_t D = m.d_off[t + 1] - m.d_off[t];
          const scalar_t* src = g + b * m.total_D + m.d_off[t];
          int64_t begin, end;
          bag_range(off, bag, n, &begin, &end);
          for (int64_t k = begin; k < end; ++k) {
            const int64_t base = m.w_off[t] + static_cast<int64_t>(idx[k]) * D;
            if (idx[k] < 0 || base + D > rows_total) continue;
            acc_t dot = 0;
            for (int64_t d = 0; d < D; ++d)
              dot += static_cast<acc_t>(src[d]) * static_cast<acc_t>(w[base + d]);
            o[k] = static_cast<float>(dot);
          }
        }
      });
    });
  });
  return out;
}

at::Tensor tbe_validate_cpu(const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                            const at::Tensor& offsets) {
  at::Tensor hs = hash_size_cumsum.to(at::kCPU, at::kLong).contiguous();
  const int64_t* hcum = hs.const_data_ptr<int64_t>();
  const int64_t T = hs.numel() - 1;
  const int64_t bags = offsets.numel() - 1;
  const int64_t B = T > 0 ? bags / T : 0;
  const int64_t n = indices.numel();
  int64_t result = kTbeValid;
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_validate_cpu", [&] {
    const index_t* idx = indices.const_data_ptr<index_t>();
    const index_t* off = offsets.const_data_ptr<index_t>();
    if (off[0] != 0) {
      result = kTbeOffsetsStart * kTbeErrorShift;
      return;
    }
    if (off[bags] != n) {
      result = kTbeOffsetsEnd * kTbeErrorShift + bags;
      return;
    }
    for (int64_t bag = 0; bag < bags; ++bag) {
      if (off[bag + 1] < off[bag]) {
        result = kTbeOffsetsOrder * kTbeErrorShift + bag + 1;
        return;
      }
    }
    for (int64_t bag = 0; bag < bags; ++bag) {
      const int64_t rows = hcum[bag / B + 1] - hcum[bag / B];
      for (int64_t k = off[bag]; k < off[bag + 1]; ++k) {
        if (idx[k] < 0 || idx[k] >= rows) {
          result = kTbeIndexRange * kTbeErrorShift + k;
          return;
        }
      }
    }
  });
  return at::full({1}, result, indices.options().dtype(at::kLong));
}

TORCH_LIBRARY_IMPL(mlperf_fast, CPU, m) {
  m.impl("tbe_forward", &tbe_forward_cpu);
  m.impl("tbe_backward_", &tbe_backward_cpu);
  m.impl("tbe_per_sample_weights_grad", &tbe_per_sample_weights_grad_cpu);
  m.impl("tbe_validate", &tbe_validate_cpu);
}

}  // namespace mlperf_fast
