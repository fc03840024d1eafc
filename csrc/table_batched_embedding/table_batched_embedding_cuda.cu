// Table-batched embedding bags on the GPU.
//
// Forward: one warp per bag (all tables in one launch), each lane holding 4 consecutive columns
// (16-byte loads for float32), the bag's indices fetched 32 at a time by the warp and broadcast,
// and 4 rows in flight per lane before any is summed.
//
// Backward: every index becomes a key (its table's first global row + the index) and a value
// (its bag, or its position when there are per-sample weights). A stable radix sort on the key's
// significant bits makes duplicates adjacent in the order of the indices; a run-length encoding
// gives one run per touched row. Runs are cut into chunks of at most kChunk entries, one warp per
// chunk: a run of one chunk (almost all of them) is reduced and its row updated by that warp;
// the chunks of a long (hot) run write partial sums that one block then adds in a fixed order
// before the update. No atomics on values: results are the same on every run.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include "common/checks.h"
#include "table_batched_embedding/table_batched_embedding.h"

namespace mlperf_fast {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kBlock = kWarp * kWarpsPerBlock;
constexpr int kVec = 4;         // columns per lane per chunk of columns
constexpr int kMaxDim = 256;    // widest row the backward holds in registers
// Chunks of 32 * V columns a lane holds for a row of up to kMaxDim columns.
template <int V>
constexpr int chunks_for() { return kMaxDim / (kWarp * V); }
constexpr int kChunk = 32;      // entries of a run reduced by one warp

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Loads V consecutive values as one vector when V > 1 (the caller guarantees the alignment).
template <typename acc_t, typename scalar_t, int V>
__device__ __forceinline__ void load_vals(const scalar_t* p, acc_t (&out)[V]) {
  const Pack<scalar_t, V> pk = *reinterpret_cast<const Pack<scalar_t, V>*>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = static_cast<acc_t>(pk.v[j]);
}

template <typename acc_t, typename scalar_t, int V>
__device__ __forceinline__ void store_vals(scalar_t* p, const acc_t (&in)[V]) {
  Pack<scalar_t, V> pk;
#pragma unroll
  for (int j = 0; j < V; ++j) pk.v[j] = static_cast<scalar_t>(in[j]);
  *reinterpret_cast<Pack<scalar_t, V>*>(p) = pk;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename index_t>
__device__ __forceinline__ void bag_range(const index_t* offsets, int64_t bag, int64_t n,
                                          int64_t* begin, int64_t* end) {
  const int64_t b0 = min(max(static_cast<int64_t>(offsets[bag]), int64_t(0)), n);
  const int64_t b1 = min(max(static_cast<int64_t>(offsets[bag + 1]), int64_t(0)), n);
  *begin = b0;
  *end = max(b0, b1);
}

struct Tables {
  const int64_t* w_off;   // [T]
  const int64_t* d_off;   // [T+1]
  const int64_t* hcum;    // [T+1]
  int64_t T, B, total_D;
  bool aligned;           // base pointers allow vector access
  // Whether table t's rows and output columns allow V-wide vector access.
  __device__ __forceinline__ bool vec_ok(int64_t t) const {
    const int64_t D = d_off[t + 1] - d_off[t];
    return aligned && D % kVec == 0 && w_off[t] % kVec == 0 && d_off[t] % kVec == 0 &&
           total_D % kVec == 0;
  }
};

// ---------------------------------------------------------------------------------------------
// Forward

template <typename scalar_t, typename index_t, int V>
__device__ void forward_bag(const scalar_t* __restrict__ w, int64_t w_numel,
                            const index_t* __restrict__ idx, const float* __restrict__ psw,
                            int64_t begin, int64_t end, int64_t wbase, int64_t D, bool mean,
                            scalar_t* __restrict__ dst) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  for (int64_t d0 = 0; d0 < D; d0 += kWarp * V) {
    const int64_t d = d0 + lane * V;
    const bool active = d < D;
    acc_t acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = 0;
    for (int64_t j0 = begin; j0 < end; j0 += kWarp) {
      int64_t my_base = -1;
      acc_t my_s = 0;
      if (j0 + lane < end) {
        const int64_t i = static_cast<int64_t>(idx[j0 + lane]);
        const int64_t base = wbase + i * D;
        // An unchecked bad index contributes nothing rather than reading outside the weights.
        if (i >= 0 && base >= 0 && base + D <= w_numel) my_base = base;
        my_s = psw ? static_cast<acc_t>(psw[j0 + lane]) : acc_t(1);
      }
      const int cnt = static_cast<int>(min(static_cast<int64_t>(kWarp), end - j0));
      int u = 0;
      for (; u + 4 <= cnt; u += 4) {
        acc_t v[4][V];
        acc_t s[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t base = __shfl_sync(0xffffffffu, my_base, u + q);
          s[q] = __shfl_sync(0xffffffffu, my_s, u + q);
          if (active && base >= 0) {
            load_vals<acc_t, scalar_t, V>(w + base + d, v[q]);
          } else {
#pragma unroll
            for (int j = 0; j < V; ++j) v[q][j] = 0;
          }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q)
#pragma unroll
          for (int j = 0; j < V; ++j) acc[j] += s[q] * v[q][j];
      }
      for (; u < cnt; ++u) {
        const int64_t base = __shfl_sync(0xffffffffu, my_base, u);
        const acc_t s = __shfl_sync(0xffffffffu, my_s, u);
        if (active && base >= 0) {
          acc_t v[V];
          load_vals<acc_t, scalar_t, V>(w + base + d, v);
#pragma unroll
          for (int j = 0; j < V; ++j) acc[j] += s * v[j];
        }
      }
    }
    if (active) {
      const acc_t scale = (mean && end > begin) ? acc_t(1) / acc_t(end - begin) : acc_t(1);
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] *= scale;
      store_vals<acc_t, scalar_t, V>(dst + d, acc);
    }
  }
}

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlock)
    tbe_forward_kernel(const scalar_t* __restrict__ w, int64_t w_numel, Tables tab,
                       const index_t* __restrict__ idx, const index_t* __restrict__ off, int64_t n,
                       const float* __restrict__ psw, bool mean, scalar_t* __restrict__ out) {
  const int64_t bag = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (bag >= tab.T * tab.B) return;
  const int64_t t = bag / tab.B, b = bag % tab.B;
  const int64_t D = tab.d_off[t + 1] - tab.d_off[t];
  int64_t begin, end;
  bag_range(off, bag, n, &begin, &end);
  scalar_t* dst = out + b * tab.total_D + tab.d_off[t];
  if (tab.vec_ok(t)) {
    forward_bag<scalar_t, index_t, kVec>(w, w_numel, idx, psw, begin, end, tab.w_off[t], D, mean,
                                         dst);
  } else {
    forward_bag<scalar_t, index_t, 1>(w, w_numel, idx, psw, begin, end, tab.w_off[t], D, mean,
                                      dst);
  }
}

// ---------------------------------------------------------------------------------------------
// Per-sample-weight gradient: warp per bag, a warp-wide dot product per index.

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlock)
    tbe_psw_grad_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ w,
                        int64_t w_numel, Tables tab, const index_t* __restrict__ idx,
                        const index_t* __restrict__ off, int64_t n, float* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t bag = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (bag >= tab.T * tab.B) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t t = bag / tab.B, b = bag % tab.B;
  const int64_t D = tab.d_off[t + 1] - tab.d_off[t];
  const scalar_t* src = go + b * tab.total_D + tab.d_off[t];
  int64_t begin, end;
  bag_range(off, bag, n, &begin, &end);
  for (int64_t k = begin; k < end; ++k) {
    const int64_t i = static_cast<int64_t>(idx[k]);
    const int64_t base = tab.w_off[t] + i * D;
    if (i < 0 || base + D > w_numel) continue;
    acc_t dot = 0;
    for (int64_t d = lane; d < D; d += kWarp)
      dot += static_cast<acc_t>(src[d]) * static_cast<acc_t>(w[base + d]);
    dot = warp_sum(dot);
    if (lane == 0) out[k] = static_cast<float>(dot);
  }
}

// ---------------------------------------------------------------------------------------------
// Validation: one thread per bag checks its offsets; one warp per bag its indices.

template <typename index_t>
__global__ void tbe_validate_kernel(const int64_t* __restrict__ hcum, int64_t B, int64_t bags,
                                    const index_t* __restrict__ idx,
                                    const index_t* __restrict__ off, int64_t n,
                                    unsigned long long* __restrict__ result) {
  const int64_t bag = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (bag >= bags) return;
  const int64_t o0 = off[bag], o1 = off[bag + 1];
  if (lane == 0) {
    unsigned long long err = kTbeValid;
    if (bag == 0 && o0 != 0) err = kTbeOffsetsStart * kTbeErrorShift;
    else if (bag == bags - 1 && o1 != n) err = kTbeOffsetsEnd * kTbeErrorShift + bags;
    else if (o1 < o0) err = kTbeOffsetsOrder * kTbeErrorShift + bag + 1;
    if (err != static_cast<unsigned long long>(kTbeValid)) atomicMin(result, err);
  }
  if (o1 < o0) return;
  const int64_t t = bag / B;
  const int64_t rows = hcum[t + 1] - hcum[t];
  const int64_t begin = min(max(o0, int64_t(0)), n), end = min(max(o1, int64_t(0)), n);
  for (int64_t k = begin + lane; k < end; k += kWarp) {
    const int64_t i = static_cast<int64_t>(idx[k]);
    if (i < 0 || i >= rows) atomicMin(result, kTbeIndexRange * kTbeErrorShift + k);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

struct UpdateArgs {
  int64_t update;
  float lr, eps;
  float* momentum;   // [num_rows], row-wise Adagrad
};

// Row `row` of table t (global row mrow) has combined gradient acc (lane's columns
// c * 32 * V + lane * V + j): write it or apply the optimizer. Called by a whole warp.
// With `preloaded`, wpre already holds the row's weights (loaded while the gradient was read).
template <typename scalar_t, int V>
__device__ __forceinline__ void apply_row(at::opmath_type<scalar_t> (&acc)[chunks_for<V>()][V],
                                          const at::opmath_type<scalar_t> (&wpre)[chunks_for<V>()][V],
                                          bool preloaded, int nchunks, int64_t D,
                                          scalar_t* __restrict__ w, scalar_t* __restrict__ grad,
                                          int64_t base, int64_t mrow, const UpdateArgs& u) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kMaxChunks = chunks_for<V>();
  const int lane = threadIdx.x % kWarp;
  acc_t step = static_cast<acc_t>(u.lr);
  if (u.update == kTbeRowwiseAdagrad) {
    acc_t sq = 0;
#pragma unroll
    for (int c = 0; c < kMaxChunks; ++c)
      if (c < nchunks && c * kWarp * V + lane * V < D)
#pragma unroll
        for (int j = 0; j < V; ++j) sq += acc[c][j] * acc[c][j];
    sq = warp_sum(sq);
    const acc_t m = static_cast<acc_t>(u.momentum[mrow]) + sq / static_cast<acc_t>(D);
    if (lane == 0) u.momentum[mrow] = static_cast<float>(m);
    step = static_cast<acc_t>(u.lr) / (sqrt(m) + static_cast<acc_t>(u.eps));
  }
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int64_t d = c * kWarp * V + lane * V;
    if (c >= nchunks || d >= D) continue;
    if (u.update == kTbeWriteGrad) {
      store_vals<acc_t, scalar_t, V>(grad + base + d, acc[c]);
    } else {
      acc_t wv[V];
      if (preloaded) {
#pragma unroll
        for (int j = 0; j < V; ++j) wv[j] = wpre[c][j];
      } else {
        load_vals<acc_t, scalar_t, V>(w + base + d, wv);
      }
#pragma unroll
      for (int j = 0; j < V; ++j) wv[j] -= step * acc[c][j];
      store_vals<acc_t, scalar_t, V>(w + base + d, wv);
    }
  }
}

struct Runs {
  const int32_t* sorted_val;   // bag (or position, with per-sample weights) in key order
  const int32_t* unique_key;   // [num_runs] global row; num_rows for bad indices
  const int32_t* run_len;
  const int32_t* run_start;
  const int32_t* chunk_start;  // [N+1] first chunk of each run
  const int32_t* chunk_run;    // run of each chunk
  const int32_t* long_start;   // [N+1] first partial of each run of several chunks
  const int32_t* num_runs;
  const int32_t* num_chunks;   // = chunk_start[N]
  const int32_t* num_long;     // runs of several chunks, listed in long_runs
  const int32_t* long_runs;
  const int32_t* bag_of;       // [N], with per-sample weights
  const float* psw;
  int32_t num_rows;
};

template <typename index_t>
__device__ __forceinline__ float bag_scale(const index_t* off, int64_t bag, int64_t n, bool mean) {
  if (!mean) return 1.0f;
  int64_t begin, end;
  bag_range(off, bag, n, &begin, &end);
  return end > begin ? 1.0f / static_cast<float>(end - begin) : 0.0f;
}

template <typename scalar_t, typename index_t, int V>
__device__ void reduce_chunk(const scalar_t* __restrict__ go, scalar_t* __restrict__ w,
                             scalar_t* __restrict__ grad, const Tables& tab, const Runs& rs,
                             const index_t* __restrict__ off, int64_t n, bool mean, int64_t chunk,
                             void* __restrict__ partials, int64_t max_D, const UpdateArgs& u) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kMaxChunks = chunks_for<V>();
  const int lane = threadIdx.x % kWarp;
  const int32_t r = rs.chunk_run[chunk];
  const int32_t key = rs.unique_key[r];
  if (key >= rs.num_rows) return;  // the run of bad indices
  const int64_t q = chunk - rs.chunk_start[r];
  const int64_t lo = rs.run_start[r] + q * kChunk;
  const int64_t hi = min(lo + kChunk, static_cast<int64_t>(rs.run_start[r]) + rs.run_len[r]);
  const int32_t first = rs.sorted_val[rs.run_start[r]];
  const int64_t t = (rs.psw ? rs.bag_of[first] : first) / tab.B;
  const int64_t D = tab.d_off[t + 1] - tab.d_off[t];
  const int nchunks = static_cast<int>((D + kWarp * V - 1) / (kWarp * V));

  // The chunk's (gradient row, scale) pairs, one per lane, broadcast below.
  int64_t my_src = 0;
  acc_t my_s = 0;
  if (lo + lane < hi) {
    const int32_t v = rs.sorted_val[lo + lane];
    const int64_t bag = rs.psw ? rs.bag_of[v] : v;
    float s = bag_scale(off, bag, n, mean);
    if (rs.psw) s *= rs.psw[v];
    my_s = static_cast<acc_t>(s);
    my_src = (bag % tab.B) * tab.total_D + tab.d_off[t];
  }
  acc_t acc[kMaxChunks][V];
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c)
#pragma unroll
    for (int j = 0; j < V; ++j) acc[c][j] = 0;
  // A run of one chunk is finished by this warp: its weights are fetched now, so that their
  // load overlaps the gradient's.
  const int64_t nchunk_run = rs.chunk_start[r + 1] - rs.chunk_start[r];
  const int64_t base = tab.w_off[t] + (key - tab.hcum[t]) * D;
  const bool preload = nchunk_run == 1 && u.update != kTbeWriteGrad;
  acc_t wpre[kMaxChunks][V];
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int64_t d = c * kWarp * V + lane * V;
    if (preload && c < nchunks && d < D) {
      load_vals<acc_t, scalar_t, V>(w + base + d, wpre[c]);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) wpre[c][j] = 0;
    }
  }
  const int cnt = static_cast<int>(hi - lo);
  int e = 0;
  // Two gradient rows in flight per lane before either is summed (the order of the sum stays
  // the order of the entries).
  for (; e + 2 <= cnt; e += 2) {
    const int64_t src0 = __shfl_sync(0xffffffffu, my_src, e);
    const int64_t src1 = __shfl_sync(0xffffffffu, my_src, e + 1);
    const acc_t s0 = __shfl_sync(0xffffffffu, my_s, e);
    const acc_t s1 = __shfl_sync(0xffffffffu, my_s, e + 1);
#pragma unroll
    for (int c = 0; c < kMaxChunks; ++c) {
      const int64_t d = c * kWarp * V + lane * V;
      if (c < nchunks && d < D) {
        acc_t g0[V], g1[V];
        load_vals<acc_t, scalar_t, V>(go + src0 + d, g0);
        load_vals<acc_t, scalar_t, V>(go + src1 + d, g1);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[c][j] += s0 * g0[j];
#pragma unroll
        for (int j = 0; j < V; ++j) acc[c][j] += s1 * g1[j];
      }
    }
  }
  for (; e < cnt; ++e) {
    const int64_t src = __shfl_sync(0xffffffffu, my_src, e);
    const acc_t s = __shfl_sync(0xffffffffu, my_s, e);
#pragma unroll
    for (int c = 0; c < kMaxChunks; ++c) {
      const int64_t d = c * kWarp * V + lane * V;
      if (c < nchunks && d < D) {
        acc_t g[V];
        load_vals<acc_t, scalar_t, V>(go + src + d, g);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[c][j] += s * g[j];
      }
    }
  }
  if (nchunk_run == 1) {
    apply_row<scalar_t, V>(acc, wpre, preload, nchunks, D, w, grad, base, key, u);
  } else {
    acc_t* p = reinterpret_cast<acc_t*>(partials) + (rs.long_start[r] + q) * max_D;
#pragma unroll
    for (int c = 0; c < kMaxChunks; ++c) {
      const int64_t d = c * kWarp * V + lane * V;
      if (c < nchunks && d < D)
#pragma unroll
        for (int j = 0; j < V; ++j) p[d + j] = acc[c][j];
    }
  }
}

// 80 registers a thread for float32 (3 blocks per SM); capping at 64 for a fourth block
// spills, so the cap waits for a measurement.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlock)
    tbe_reduce_kernel(const scalar_t* __restrict__ go, scalar_t* __restrict__ w,
                      scalar_t* __restrict__ grad, Tables tab, Runs rs,
                      const index_t* __restrict__ off, int64_t n, bool mean,
                      void* __restrict__ partials, int64_t max_D, UpdateArgs u) {
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t chunks = *rs.num_chunks;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
       c < chunks; c += warps) {
    const int32_t r = rs.chunk_run[c];
    if (rs.unique_key[r] >= rs.num_rows) continue;  // the run of bad indices
    const int32_t first = rs.sorted_val[rs.run_start[r]];
    const int64_t t = (rs.psw ? rs.bag_of[first] : first) / tab.B;
    if (tab.vec_ok(t)) {
      reduce_chunk<scalar_t, index_t, kVec>(go, w, grad, tab, rs, off, n, mean, c, partials,
                                            max_D, u);
    } else {
      reduce_chunk<scalar_t, index_t, 1>(go, w, grad, tab, rs, off, n, mean, c, partials, max_D,
                                         u);
    }
  }
}

// One block per run of several chunks: warp k adds the partials k, k + 8, ... in order, the
// block adds the 8 warp sums in order, and warp 0 applies the update.
template <typename scalar_t>
__global__ void __launch_bounds__(kBlock)
    tbe_combine_kernel(scalar_t* __restrict__ w, scalar_t* __restrict__ grad, Tables tab,
                       Runs rs, const void* __restrict__ partials, int64_t max_D, UpdateArgs u) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);  // [kWarpsPerBlock][max_D]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t nlong = *rs.num_long;
  for (int64_t i = blockIdx.x; i < nlong; i += gridDim.x) {
    const int32_t r = rs.long_runs[i];
    const int32_t key = rs.unique_key[r];
    if (key >= rs.num_rows) continue;  // uniform over the block
    const int32_t first = rs.sorted_val[rs.run_start[r]];
    const int64_t t = (rs.psw ? rs.bag_of[first] : first) / tab.B;
    const int64_t D = tab.d_off[t + 1] - tab.d_off[t];
    const int64_t parts = rs.chunk_start[r + 1] - rs.chunk_start[r];
    const acc_t* p = reinterpret_cast<const acc_t*>(partials) + rs.long_start[r] * max_D;
    for (int64_t d = lane; d < D; d += kWarp) {
      acc_t a = 0;
      for (int64_t k = warp; k < parts; k += kWarpsPerBlock) a += p[k * max_D + d];
      smem[warp * max_D + d] = a;
    }
    __syncthreads();
    if (warp == 0) {
      const int64_t base = tab.w_off[t] + (key - tab.hcum[t]) * D;
      auto finish = [&](auto vec_tag) {
        constexpr int V = decltype(vec_tag)::value;
        constexpr int kMaxChunks = chunks_for<V>();
        acc_t acc[kMaxChunks][V];
        const int nchunks = static_cast<int>((D + kWarp * V - 1) / (kWarp * V));
#pragma unroll
        for (int c = 0; c < kMaxChunks; ++c)
#pragma unroll
          for (int j = 0; j < V; ++j) {
            const int64_t d = c * kWarp * V + lane * V + j;
            acc_t a = 0;
            if (c < nchunks && d < D)
              for (int k = 0; k < kWarpsPerBlock; ++k) a += smem[k * max_D + d];
            acc[c][j] = a;
          }
        apply_row<scalar_t, V>(acc, acc, false, nchunks, D, w, grad, base, key, u);
      };
      if (tab.vec_ok(t)) {
        finish(std::integral_constant<int, kVec>{});
      } else {
        finish(std::integral_constant<int, 1>{});
      }
    }
    __syncthreads();
  }
}

// Keys and values of every index: key = global row (num_rows for a bad index; indices outside
// every bag keep the num_rows they were filled with), value = bag, or position when there are
// per-sample weights.
template <typename index_t>
__global__ void __launch_bounds__(kBlock)
    tbe_keys_kernel(Tables tab, const index_t* __restrict__ idx, const index_t* __restrict__ off,
                    int64_t n, bool by_position, int32_t num_rows, int32_t* __restrict__ key,
                    int32_t* __restrict__ val, int32_t* __restrict__ bag_of) {
  const int64_t bag = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (bag >= tab.T * tab.B) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t t = bag / tab.B;
  const int64_t rows = tab.hcum[t + 1] - tab.hcum[t];
  int64_t begin, end;
  bag_range(off, bag, n, &begin, &end);
  for (int64_t k = begin + lane; k < end; k += kWarp) {
    const int64_t i = static_cast<int64_t>(idx[k]);
    key[k] = (i >= 0 && i < rows) ? static_cast<int32_t>(tab.hcum[t] + i) : num_rows;
    val[k] = static_cast<int32_t>(by_position ? k : bag);
    if (by_position) bag_of[k] = static_cast<int32_t>(bag);
  }
}

// Per run: its length (zero past the last run, so scans over n + 1 entries end in the totals),
// its chunks, and the chunks of the runs of several, which are also listed (in any order: each
// is combined by one block, in a fixed order within it).
__global__ void tbe_count_chunks_kernel(const int32_t* __restrict__ run_len,
                                        const int32_t* __restrict__ num_runs, int64_t n,
                                        int32_t* __restrict__ len_valid,
                                        int32_t* __restrict__ chunk_count,
                                        int32_t* __restrict__ long_count,
                                        int32_t* __restrict__ long_runs,
                                        int32_t* __restrict__ num_long) {
  const int64_t runs = *num_runs;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r <= n;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t len = r < runs ? run_len[r] : 0;
    const int32_t c = (len + kChunk - 1) / kChunk;
    len_valid[r] = len;
    chunk_count[r] = c;
    long_count[r] = c > 1 ? c : 0;
    if (c > 1) long_runs[atomicAdd(num_long, 1)] = static_cast<int32_t>(r);
  }
}

__global__ void tbe_chunk_runs_kernel(const int32_t* __restrict__ chunk_start,
                                      const int32_t* __restrict__ num_runs,
                                      int32_t* __restrict__ chunk_run) {
  const int64_t runs = *num_runs;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < runs;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    for (int32_t c = chunk_start[r]; c < chunk_start[r + 1]; ++c) chunk_run[c] = r;
  }
}

int grid_for(int64_t items, int per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(1) << 30)));
}

// Enough blocks to fill the GPU, for grid-stride loops whose length is known only on the device.
int resident_grid(int per_sm) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms * per_sm;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

Tables make_tables(const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                   const int64_t* hcum, const at::Tensor& offsets, int64_t total_D,
                   bool aligned) {
  Tables tab;
  tab.w_off = weights_offsets.const_data_ptr<int64_t>();
  tab.d_off = D_offsets.const_data_ptr<int64_t>();
  tab.hcum = hcum;
  tab.T = weights_offsets.numel();
  tab.B = tab.T > 0 ? (offsets.numel() - 1) / tab.T : 0;
  tab.total_D = total_D;
  tab.aligned = aligned;
  return tab;
}

void check_meta(const at::Tensor& t, const at::Tensor& like, const char* name) {
  MF_CHECK_VALUE(t.device() == like.device(), name, "is on ", t.device(), " but weights are on ",
                 like.device());
  MF_CHECK_TYPE(t.scalar_type() == at::kLong, name, "must be int64, got ", t.scalar_type());
  MF_CHECK_VALUE(t.is_contiguous(), name, "must be contiguous");
}

}  // namespace

at::Tensor tbe_forward_cuda(const at::Tensor& weights, const at::Tensor& weights_offsets,
                            const at::Tensor& D_offsets, const at::Tensor& indices,
                            const at::Tensor& offsets, int64_t pooling,
                            const c10::optional<at::Tensor>& per_sample_weights, int64_t total_D) {
  check_meta(weights_offsets, weights, "weights_offsets");
  check_meta(D_offsets, weights, "D_offsets");
  MF_CHECK_VALUE(weights.is_contiguous(), "weights", "must be contiguous");
  const c10::cuda::CUDAGuard guard(weights.device());
  const int64_t T = weights_offsets.numel();
  const int64_t B = T > 0 ? (offsets.numel() - 1) / T : 0;
  at::Tensor out = at::empty({B, total_D}, weights.options());
  const Tables tab = make_tables(weights_offsets, D_offsets, nullptr, offsets, total_D,
                                 aligned16(weights.const_data_ptr()) && aligned16(out.data_ptr()));
  const int64_t bags = T * B;
  if (bags == 0 || total_D == 0) return out;
  at::Tensor psw;
  if (per_sample_weights.has_value()) psw = per_sample_weights->to(at::kFloat).contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_forward_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                    "tbe_forward_cuda", [&] {
      tbe_forward_kernel<scalar_t, index_t><<<grid_for(bags, kWarpsPerBlock), kBlock, 0, stream>>>(
          weights.const_data_ptr<scalar_t>(), weights.numel(), tab,
          indices.const_data_ptr<index_t>(), offsets.const_data_ptr<index_t>(), indices.numel(),
          psw.defined() ? psw.const_data_ptr<float>() : nullptr, pooling == kTbeMean,
          out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

at::Tensor tbe_per_sample_weights_grad_cuda(const at::Tensor& grad_output,
                                            const at::Tensor& weights,
                                            const at::Tensor& weights_offsets,
                                            const at::Tensor& D_offsets, const at::Tensor& indices,
                                            const at::Tensor& offsets) {
  check_meta(weights_offsets, weights, "weights_offsets");
  check_meta(D_offsets, weights, "D_offsets");
  const c10::cuda::CUDAGuard guard(weights.device());
  at::Tensor go = grad_output.contiguous();
  const Tables tab = make_tables(weights_offsets, D_offsets, nullptr, offsets, go.size(1), false);
  at::Tensor out = at::zeros({indices.numel()}, weights.options().dtype(at::kFloat));
  const int64_t bags = tab.T * tab.B;
  if (bags == 0 || indices.numel() == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_psw_grad_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                    "tbe_psw_grad_cuda", [&] {
      tbe_psw_grad_kernel<scalar_t, index_t><<<grid_for(bags, kWarpsPerBlock), kBlock, 0, stream>>>(
          go.const_data_ptr<scalar_t>(), weights.const_data_ptr<scalar_t>(), weights.numel(), tab,
          indices.const_data_ptr<index_t>(), offsets.const_data_ptr<index_t>(), indices.numel(),
          out.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

at::Tensor tbe_validate_cuda(const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                             const at::Tensor& offsets) {
  const c10::cuda::CUDAGuard guard(indices.device());
  at::Tensor result = at::full({1}, kTbeValid, indices.options().dtype(at::kLong));
  const int64_t T = hash_size_cumsum.numel() - 1;
  const int64_t bags = offsets.numel() - 1;
  if (T <= 0 || bags <= 0) return result;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_validate_cuda", [&] {
    tbe_validate_kernel<index_t><<<grid_for(bags, kWarpsPerBlock), kBlock, 0, stream>>>(
        hash_size_cumsum.const_data_ptr<int64_t>(), bags / T, bags,
        indices.const_data_ptr<index_t>(), offsets.const_data_ptr<index_t>(), indices.numel(),
        reinterpret_cast<unsigned long long*>(result.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result;
}

void tbe_backward_cuda(const at::Tensor& grad_output, const at::Tensor& weights,
                       const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                       const at::Tensor& hash_size_cumsum, const at::Tensor& indices,
                       const at::Tensor& offsets, int64_t pooling,
                       const c10::optional<at::Tensor>& per_sample_weights, int64_t update,
                       double lr, double eps, const c10::optional<at::Tensor>& momentum,
                       const c10::optional<at::Tensor>& grad, int64_t num_rows, int64_t max_D) {
  check_meta(weights_offsets, weights, "weights_offsets");
  check_meta(D_offsets, weights, "D_offsets");
  check_meta(hash_size_cumsum, weights, "hash_size_cumsum");
  MF_CHECK_VALUE(weights.is_contiguous(), "weights", "must be contiguous");
  MF_CHECK_VALUE(num_rows < INT32_MAX, "hash_size_cumsum", "more than 2^31 - 2 rows in all");
  MF_CHECK_VALUE(indices.numel() <= (int64_t(1) << 30), "indices", "more than 2^30 indices");
  MF_CHECK_VALUE(max_D <= kMaxDim, "D_offsets",
                 "rows wider than 256 are not supported by the CUDA backward");
  const c10::cuda::CUDAGuard guard(weights.device());
  const int64_t n = indices.numel();
  if (n == 0 || num_rows == 0 || max_D == 0) return;
  at::Tensor go = grad_output.contiguous();
  bool aligned = aligned16(weights.const_data_ptr()) && aligned16(go.const_data_ptr());
  if (grad.has_value()) aligned = aligned && aligned16(grad->const_data_ptr());
  const Tables tab = make_tables(weights_offsets, D_offsets,
                                 hash_size_cumsum.const_data_ptr<int64_t>(), offsets, go.size(1),
                                 aligned);
  const int64_t bags = tab.T * tab.B;
  if (bags == 0) return;  // no bag holds an index
  const bool has_psw = per_sample_weights.has_value();
  at::Tensor psw;
  if (has_psw) psw = per_sample_weights->to(at::kFloat).contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto i32 = indices.options().dtype(at::kInt);
  const auto bytes = indices.options().dtype(at::kByte);

  // Keys and values, sorted on the bits a row number can have.
  at::Tensor key = at::full({n}, static_cast<int32_t>(num_rows), i32);
  at::Tensor val = at::zeros({n}, i32);
  at::Tensor bag_of = has_psw ? at::zeros({n}, i32) : at::empty({0}, i32);
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_keys", [&] {
    tbe_keys_kernel<index_t><<<grid_for(bags, kWarpsPerBlock), kBlock, 0, stream>>>(
        tab, indices.const_data_ptr<index_t>(), offsets.const_data_ptr<index_t>(), n, has_psw,
        static_cast<int32_t>(num_rows), key.data_ptr<int32_t>(), val.data_ptr<int32_t>(),
        has_psw ? bag_of.data_ptr<int32_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  int end_bit = 1;
  while (end_bit < 31 && (int64_t(1) << end_bit) <= num_rows) ++end_bit;
  at::Tensor sorted_key = at::empty({n}, i32), sorted_val = at::empty({n}, i32);
  const int num_items = static_cast<int>(n);
  size_t sort_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, key.const_data_ptr<int32_t>(), sorted_key.data_ptr<int32_t>(),
      val.const_data_ptr<int32_t>(), sorted_val.data_ptr<int32_t>(), num_items, 0, end_bit,
      stream));
  at::Tensor sort_tmp = at::empty({static_cast<int64_t>(sort_bytes)}, bytes);
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      sort_tmp.data_ptr(), sort_bytes, key.const_data_ptr<int32_t>(),
      sorted_key.data_ptr<int32_t>(), val.const_data_ptr<int32_t>(),
      sorted_val.data_ptr<int32_t>(), num_items, 0, end_bit, stream));

  // One run per touched row (the bad indices, if any, form the last run).
  at::Tensor unique_key = at::empty({n}, i32), run_len = at::empty({n}, i32);
  at::Tensor num_runs = at::empty({1}, i32);
  size_t rle_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(
      nullptr, rle_bytes, sorted_key.const_data_ptr<int32_t>(), unique_key.data_ptr<int32_t>(),
      run_len.data_ptr<int32_t>(), num_runs.data_ptr<int32_t>(), num_items, stream));
  at::Tensor rle_tmp = at::empty({static_cast<int64_t>(rle_bytes)}, bytes);
  C10_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(
      rle_tmp.data_ptr(), rle_bytes, sorted_key.const_data_ptr<int32_t>(),
      unique_key.data_ptr<int32_t>(), run_len.data_ptr<int32_t>(), num_runs.data_ptr<int32_t>(),
      num_items, stream));

  // Run starts, chunks per run and their starts, and where each long run's partials go: scans
  // over n + 1 entries (zero past the last run), so entry [n] holds each total.
  at::Tensor len_valid = at::empty({n + 1}, i32);
  at::Tensor chunk_count = at::empty({n + 1}, i32), long_count = at::empty({n + 1}, i32);
  at::Tensor long_runs = at::empty({n / kChunk + 1}, i32);
  at::Tensor num_long = at::zeros({1}, i32);
  const int small_grid = std::min(grid_for(n + 1, 256), resident_grid(8));
  tbe_count_chunks_kernel<<<small_grid, 256, 0, stream>>>(
      run_len.const_data_ptr<int32_t>(), num_runs.const_data_ptr<int32_t>(), n,
      len_valid.data_ptr<int32_t>(), chunk_count.data_ptr<int32_t>(),
      long_count.data_ptr<int32_t>(), long_runs.data_ptr<int32_t>(), num_long.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor run_start = at::empty({n + 1}, i32), chunk_start = at::empty({n + 1}, i32);
  at::Tensor long_start = at::empty({n + 1}, i32);
  size_t scan_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes,
                                               len_valid.const_data_ptr<int32_t>(),
                                               run_start.data_ptr<int32_t>(), num_items + 1,
                                               stream));
  at::Tensor scan_tmp = at::empty({static_cast<int64_t>(scan_bytes)}, bytes);
  for (auto [in, out] : {std::pair{&len_valid, &run_start}, std::pair{&chunk_count, &chunk_start},
                         std::pair{&long_count, &long_start}}) {
    C10_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(scan_tmp.data_ptr(), scan_bytes,
                                                 in->const_data_ptr<int32_t>(),
                                                 out->data_ptr<int32_t>(), num_items + 1, stream));
  }
  // A run of l entries has ceil(l / kChunk) <= l / kChunk + 1 chunks.
  at::Tensor chunk_run = at::empty({n + n / kChunk + 1}, i32);
  tbe_chunk_runs_kernel<<<small_grid, 256, 0, stream>>>(chunk_start.const_data_ptr<int32_t>(),
                                                        num_runs.const_data_ptr<int32_t>(),
                                                        chunk_run.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  Runs rs;
  rs.sorted_val = sorted_val.const_data_ptr<int32_t>();
  rs.unique_key = unique_key.const_data_ptr<int32_t>();
  rs.run_len = run_len.const_data_ptr<int32_t>();
  rs.run_start = run_start.const_data_ptr<int32_t>();
  rs.chunk_start = chunk_start.const_data_ptr<int32_t>();
  rs.chunk_run = chunk_run.const_data_ptr<int32_t>();
  rs.long_start = long_start.const_data_ptr<int32_t>();
  rs.num_runs = num_runs.const_data_ptr<int32_t>();
  rs.num_chunks = chunk_start.const_data_ptr<int32_t>() + n;
  rs.num_long = num_long.const_data_ptr<int32_t>();
  rs.long_runs = long_runs.const_data_ptr<int32_t>();
  rs.bag_of = has_psw ? bag_of.const_data_ptr<int32_t>() : nullptr;
  rs.psw = has_psw ? psw.const_data_ptr<float>() : nullptr;
  rs.num_rows = static_cast<int32_t>(num_rows);

  UpdateArgs u;
  u.update = update;
  u.lr = static_cast<float>(lr);
  u.eps = static_cast<float>(eps);
  u.momentum = momentum.has_value() ? momentum->data_ptr<float>() : nullptr;

  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_backward_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                    "tbe_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      // The chunks of long runs: each has more than kChunk entries, so fewer than 2 n / kChunk.
      at::Tensor partials =
          at::empty({(2 * n / kChunk + 1) * max_D},
                    weights.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      scalar_t* gw = grad.has_value() ? grad->data_ptr<scalar_t>() : nullptr;
      const int reduce_grid =
          std::min(grid_for(n + n / kChunk + 1, kWarpsPerBlock), resident_grid(16));
      tbe_reduce_kernel<scalar_t, index_t><<<reduce_grid, kBlock, 0, stream>>>(
          go.const_data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), gw, tab, rs,
          offsets.const_data_ptr<index_t>(), n, pooling == kTbeMean, partials.data_ptr(), max_D,
          u);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const size_t smem = sizeof(acc_t) * kWarpsPerBlock * max_D;
      const int combine_grid = std::min(grid_for(n / kChunk + 1, 1), resident_grid(4));
      tbe_combine_kernel<scalar_t><<<combine_grid, kBlock, smem, stream>>>(
          weights.data_ptr<scalar_t>(), gw, tab, rs, partials.const_data_ptr(), max_D, u);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

TORCH_LIBRARY_IMPL(mlperf_fast, CUDA, m) {
  m.impl("tbe_forward", &tbe_forward_cuda);
  m.impl("tbe_backward_", &tbe_backward_cuda);
  m.impl("tbe_per_sample_weights_grad", &tbe_per_sample_weights_grad_cuda);
  m.impl("tbe_validate", &tbe_validate_cuda);
}

}  // namespace mlperf_fast
