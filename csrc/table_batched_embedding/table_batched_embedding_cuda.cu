// Table-batched embedding bags on the GPU.
//
// Forward: a warp pools 32 consecutive bags. Lane i reads bag i's offsets and first index, so the
// rows of 8 one-index bags are in flight at once: with one index per bag (DLRM's categorical
// features) a warp per bag waits on three dependent loads (offsets, index, row) for each row it
// reads. A lane holds 4 consecutive columns (16-byte loads for float32); the indices of longer
// bags are fetched 32 at a time (the next bag's while this one's rows are read) and broadcast,
// 8 rows in flight per lane as well. The output is written with streaming stores, which leave
// the L2 to the rows (hot rows are read again). Bags of kLongBag or more indices on average (the
// host knows the mean from the sizes, with no sync) take a warp each instead: more warps then
// have rows in flight than when a warp pools 32 long bags in turn.
//
// Backward: every index becomes a key (its table's first global row + the index) and a value (its
// bag, or its position when there are per-sample weights). A stable radix sort on the key's
// significant bits makes duplicates adjacent, in the order of the indices. A warp then takes a
// slice of 32 sorted entries and finishes every run (touched row) that starts in it: the run's
// gradient rows are summed in order and the row is updated, the last run reading on into the
// next slice when it ends there. A run that goes on past the next slice (a hot row) is summed
// slice by slice into partial sums, which a second kernel adds in a fixed order before the update.
// No atomics on values: results are the same on every run.
//
// Where the backward's time goes (H100, DLRM at 20 uniform indices per bag, ncu): the reduce
// kernel moves 28.9 GB of DRAM traffic in 10.1 ms (2.87 TB/s). About 8 GB of it are gradient
// rows read again: 6.6 GB of its 27.4 GB of L2 reads hit, which is 38% of the 17.4 GB of
// gradient gathers, although a table's gradient (33.5 MB) would fit the L2. Passes over half the
// columns at a time (16.8 MB of a table's gradient) cut the traffic to 23.5 GB but ran at
// 2.2 TB/s, 0.6 ms slower in all: rows are then touched in 256-byte pieces. Setting aside L2 for
// persisting accesses (cudaLimitPersistingL2CacheSize) made it slower still (21 MiB: 19.0 ms;
// 31 MiB: 28 ms, against 17.9).
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <tuple>
#include <type_traits>

#include "common/checks.h"
#include "table_batched_embedding/table_batched_embedding.h"

namespace mlperf_fast {

namespace {

constexpr int kWarp = 32;
constexpr uint32_t kFull = 0xffffffffu;
constexpr int kWarpsPerBlock = 8;
constexpr int kBlock = kWarp * kWarpsPerBlock;
constexpr int kVec = 4;         // columns per lane per chunk of columns
constexpr int kMaxDim = 256;    // widest row the backward holds in registers
constexpr int kRowsInFlight = 8;   // rows a lane loads in the forward before summing any
constexpr int kLongBag = 4;        // mean indices per bag from which the forward takes a warp a bag
// Blocks per SM the forward and reduce kernels are compiled for (at most 128 and 85 registers a
// thread): 16 warps an SM with 8 rows each, 24 with 4 gradient and 4 weight rows, keep enough
// 512-byte rows in flight to cover the memory's latency (the reduce spills a few addresses).
constexpr int kForwardMinBlocks = 2;
constexpr int kReduceMinBlocks = 3;
// Chunks of 32 * V columns a lane holds for a row of up to kMaxDim columns.
template <int V>
constexpr int chunks_for() { return kMaxDim / (kWarp * V); }

template <int N>
using Int = std::integral_constant<int, N>;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// The integer vector that moves `Bytes` in one streaming access (__ldcs / __stcs).
template <int Bytes> struct Word;
template <> struct Word<16> { using type = uint4; };
template <> struct Word<8> { using type = uint2; };
template <> struct Word<4> { using type = unsigned int; };
template <> struct Word<2> { using type = unsigned short; };

// A pack loaded or stored with the evict-first policy, for data touched once.
template <typename P>
__device__ __forceinline__ P load_streaming(const P* p) {
  constexpr int kBytes = sizeof(P) < 16 ? sizeof(P) : 16;
  using W = typename Word<kBytes>::type;
  union { P pack; W words[sizeof(P) / kBytes]; } u;
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(P) / kBytes); ++i)
    u.words[i] = __ldcs(reinterpret_cast<const W*>(p) + i);
  return u.pack;
}

template <typename P>
__device__ __forceinline__ void store_streaming(P* p, const P& v) {
  constexpr int kBytes = sizeof(P) < 16 ? sizeof(P) : 16;
  using W = typename Word<kBytes>::type;
  union { P pack; W words[sizeof(P) / kBytes]; } u;
  u.pack = v;
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(P) / kBytes); ++i)
    __stcs(reinterpret_cast<W*>(p) + i, u.words[i]);
}

// How a load treats the L2: kStream for data read once (evict-first), kKeep for data read again
// (evict-last). The backward's gradient gathers use kKeep: a bag's gradient row is read once per
// lookup, scattered between the weight rows that the update streams. Measured on the H100 (DLRM,
// 20 uniform indices per bag): the change to these loads took the training step from 20.6 to
// 18.2 ms, but through the reduce kernel's code (fewer spills) more than through the L2. With the
// code fixed and the policy picked at run time, evict-last gradient loads take 18.02 ms against
// 18.05 for plain ones, and other policies for the weight rows stay within 2%.
enum class Cache { kNormal, kStream, kKeep };

// Four float32 values loaded under an L2 evict_last policy.
__device__ __forceinline__ Pack<float, 4> load_keep(const float* p) {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  Pack<float, 4> r;
  asm volatile("ld.global.L2::cache_hint.v4.f32 {%0,%1,%2,%3}, [%4], %5;"
               : "=f"(r.v[0]), "=f"(r.v[1]), "=f"(r.v[2]), "=f"(r.v[3])
               : "l"(p), "l"(policy));
  return r;
}

// Loads V consecutive values as one vector when V > 1 (the caller guarantees the alignment).
// kKeep applies to vectors of four float32 values; other loads of it are plain.
template <Cache kMode, typename acc_t, typename scalar_t, int V>
__device__ __forceinline__ void load_vals(const scalar_t* p, acc_t (&out)[V]) {
  using P = Pack<scalar_t, V>;
  P pk;
  if constexpr (kMode == Cache::kKeep && std::is_same_v<scalar_t, float> && V == 4) {
    pk = load_keep(p);
  } else if constexpr (kMode == Cache::kStream) {
    pk = load_streaming(reinterpret_cast<const P*>(p));
  } else {
    pk = *reinterpret_cast<const P*>(p);
  }
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = static_cast<acc_t>(pk.v[j]);
}

template <Cache kMode, typename acc_t, typename scalar_t, int V>
__device__ __forceinline__ void store_vals(scalar_t* p, const acc_t (&in)[V]) {
  using P = Pack<scalar_t, V>;
  P pk;
#pragma unroll
  for (int j = 0; j < V; ++j) pk.v[j] = static_cast<scalar_t>(in[j]);
  static_assert(kMode != Cache::kKeep, "stores stream or not");
  if constexpr (kMode == Cache::kStream) {
    store_streaming(reinterpret_cast<P*>(p), pk);
  } else {
    *reinterpret_cast<P*>(p) = pk;
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
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

// The calling warp's index in the grid.
__device__ __forceinline__ int64_t global_warp() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
}

// The 32 consecutive bags that the calling warp takes (forward, index check, keys): bags
// [bag0, bag0 + nb), lane i on bag bag0 + i, in tables t0 .. t1. False past the last bag.
struct WarpBags {
  int64_t bag0, t0, t1;
  int nb, lane;
};

__device__ __forceinline__ bool warp_bags(int64_t bags, int64_t B, WarpBags* g) {
  g->bag0 = global_warp() * kWarp;
  if (g->bag0 >= bags) return false;
  g->lane = threadIdx.x % kWarp;
  g->nb = static_cast<int>(min(static_cast<int64_t>(kWarp), bags - g->bag0));
  g->t0 = g->bag0 / B;
  g->t1 = (g->bag0 + g->nb - 1) / B;
  return true;
}

struct Tables {
  const int64_t* w_off;   // [T]
  const int64_t* d_off;   // [T+1]
  const int64_t* hcum;    // [T+1], backward only
  int64_t T, B, total_D, w_numel;
  bool aligned;           // base pointers allow vector access
  __device__ __forceinline__ int64_t dim(int64_t t) const { return d_off[t + 1] - d_off[t]; }
  // Rows of table t: the tables lie back to back in the weights.
  __device__ __forceinline__ int64_t rows(int64_t t) const {
    const int64_t next = t + 1 < T ? w_off[t + 1] : w_numel;
    return (next - w_off[t]) / max(dim(t), int64_t(1));
  }
  // Whether table t's rows and output columns allow V-wide vector access.
  __device__ __forceinline__ bool vec_ok(int64_t t) const {
    const int64_t D = dim(t);
    return aligned && D % kVec == 0 && w_off[t] % kVec == 0 && d_off[t] % kVec == 0 &&
           total_D % kVec == 0;
  }
};

// ---------------------------------------------------------------------------------------------
// Forward

// Row start of index i of a table (wbase, D, rows), or -1: an unchecked bad index contributes
// nothing rather than reading another row.
__device__ __forceinline__ int64_t row_base(int64_t i, int64_t wbase, int64_t D, int64_t rows,
                                            int64_t w_numel) {
  const int64_t base = wbase + i * D;
  return (i >= 0 && i < rows && base + D <= w_numel) ? base : -1;
}

// Adds s * w[row] to this lane's columns d .. d + V - 1 for the first cnt (<= 32) entries that the
// lanes hold (my_base, my_s), in order, 8 rows in flight. Called by a whole warp.
template <typename scalar_t, int V>
__device__ __forceinline__ void sum_rows(const scalar_t* __restrict__ w, int64_t my_base,
                                         at::opmath_type<scalar_t> my_s, int cnt, int64_t d,
                                         bool active, at::opmath_type<scalar_t> (&acc)[V]) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int u = 0; u < cnt; u += kRowsInFlight) {
    acc_t v[kRowsInFlight][V];
    acc_t s[kRowsInFlight];
#pragma unroll
    for (int q = 0; q < kRowsInFlight; ++q) {
      const int64_t base = __shfl_sync(kFull, my_base, (u + q) % kWarp);
      s[q] = __shfl_sync(kFull, my_s, (u + q) % kWarp);
      if (active && u + q < cnt && base >= 0) {
        load_vals<Cache::kNormal, acc_t, scalar_t, V>(w + base + d, v[q]);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) v[q][j] = 0;
      }
    }
#pragma unroll
    for (int q = 0; q < kRowsInFlight; ++q)
      if (u + q < cnt)
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += s[q] * v[q][j];
  }
}

// Adds s * w[row] for the indices [begin, end) of one bag, fetched 32 at a time.
template <typename scalar_t, typename index_t, int V>
__device__ __forceinline__ void gather_add(const scalar_t* __restrict__ w, int64_t w_numel,
                                           const index_t* __restrict__ idx,
                                           const float* __restrict__ psw, int64_t begin,
                                           int64_t end, int64_t wbase, int64_t D, int64_t rows,
                                           int64_t d, bool active,
                                           at::opmath_type<scalar_t> (&acc)[V]) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  for (int64_t j0 = begin; j0 < end; j0 += kWarp) {
    int64_t my_base = -1;
    acc_t my_s = 0;
    if (j0 + lane < end) {
      my_base = row_base(static_cast<int64_t>(idx[j0 + lane]), wbase, D, rows, w_numel);
      my_s = psw ? static_cast<acc_t>(psw[j0 + lane]) : acc_t(1);
    }
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kWarp), end - j0));
    sum_rows<scalar_t, V>(w, my_base, my_s, cnt, d, active, acc);
  }
}

// One bag of table t, pooled into dst (its row of the output, at the table's columns).
template <typename scalar_t, typename index_t, int V>
__device__ void pool_bag(const scalar_t* __restrict__ w, const Tables& tab,
                         const index_t* __restrict__ idx, const float* __restrict__ psw,
                         int64_t begin, int64_t end, int64_t t, bool mean,
                         scalar_t* __restrict__ dst) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t D = tab.dim(t), rows = tab.rows(t), wbase = tab.w_off[t];
  const acc_t scale = (mean && end > begin) ? acc_t(1) / acc_t(end - begin) : acc_t(1);
  for (int64_t d0 = 0; d0 < D; d0 += kWarp * V) {
    const int64_t d = d0 + lane * V;
    const bool active = d < D;
    acc_t acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = 0;
    gather_add<scalar_t, index_t, V>(w, tab.w_numel, idx, psw, begin, end, wbase, D, rows, d,
                                     active, acc);
    if (active) {
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] *= scale;
      store_vals<Cache::kStream, acc_t, scalar_t, V>(dst + d, acc);
    }
  }
}

// The nb (<= 32) bags bag0 ... of table t; lane i holds bag i's [begin, end).
template <typename scalar_t, typename index_t, int V>
__device__ void pool_group(const scalar_t* __restrict__ w, const Tables& tab,
                           const index_t* __restrict__ idx, const float* __restrict__ psw,
                           int64_t bag0, int nb, int64_t t, int64_t begin, int64_t end, bool mean,
                           scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t D = tab.dim(t), rows = tab.rows(t), wbase = tab.w_off[t];
  // A one-index bag's row and weight; longer bags are pooled one by one after these.
  int64_t my_base = -1;
  acc_t my_s = 0;
  if (end - begin == 1) {
    my_base = row_base(static_cast<int64_t>(idx[begin]), wbase, D, rows, tab.w_numel);
    my_s = psw ? static_cast<acc_t>(psw[begin]) : acc_t(1);
  }
  const uint32_t longer = __ballot_sync(kFull, lane < nb && end - begin > 1);
  scalar_t* dst0 = out + (bag0 - t * tab.B) * tab.total_D + tab.d_off[t];
  // This lane's entry of the first 32 indices of longer bag b (index -1 past the bag's end).
  auto first_indices = [&](int b, int64_t* i, acc_t* sw) {
    const int64_t lo = __shfl_sync(kFull, begin, b), hi = __shfl_sync(kFull, end, b);
    *i = -1;
    *sw = 0;
    if (lo + lane < hi) {
      *i = static_cast<int64_t>(idx[lo + lane]);
      *sw = psw ? static_cast<acc_t>(psw[lo + lane]) : acc_t(1);
    }
  };
  for (int64_t d0 = 0; d0 < D; d0 += kWarp * V) {
    const int64_t d = d0 + lane * V;
    const bool active = d < D;
    for (int i0 = 0; i0 < nb; i0 += kRowsInFlight) {
      acc_t v[kRowsInFlight][V];
#pragma unroll
      for (int q = 0; q < kRowsInFlight; ++q) {
        const int64_t base = __shfl_sync(kFull, my_base, i0 + q);
        if (active && base >= 0) {
          load_vals<Cache::kNormal, acc_t, scalar_t, V>(w + base + d, v[q]);
        } else {
#pragma unroll
          for (int j = 0; j < V; ++j) v[q][j] = 0;
        }
      }
#pragma unroll
      for (int q = 0; q < kRowsInFlight; ++q) {
        const acc_t s = __shfl_sync(kFull, my_s, i0 + q);
        const int b = i0 + q;
        if (active && b < nb && !((longer >> b) & 1u)) {
#pragma unroll
          for (int j = 0; j < V; ++j) v[q][j] *= s;
          store_vals<Cache::kStream, acc_t, scalar_t, V>(dst0 + b * tab.total_D + d, v[q]);
        }
      }
    }
    // Longer bags: the next bag's first indices are fetched before this bag's rows are read.
    int64_t next_i = -1;
    acc_t next_s = 0;
    if (longer != 0) first_indices(__ffs(longer) - 1, &next_i, &next_s);
    for (uint32_t rest = longer; rest != 0;) {
      const int b = __ffs(rest) - 1;
      rest &= rest - 1;
      const int64_t lo = __shfl_sync(kFull, begin, b), hi = __shfl_sync(kFull, end, b);
      const int64_t base = row_base(next_i, wbase, D, rows, tab.w_numel);
      const acc_t sw = next_s;
      if (rest != 0) first_indices(__ffs(rest) - 1, &next_i, &next_s);
      acc_t acc[V];
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] = 0;
      sum_rows<scalar_t, V>(w, base, sw, static_cast<int>(min(hi - lo, int64_t(kWarp))), d,
                            active, acc);
      if (hi - lo > kWarp)
        gather_add<scalar_t, index_t, V>(w, tab.w_numel, idx, psw, lo + kWarp, hi, wbase, D,
                                         rows, d, active, acc);
      if (active) {
        const acc_t scale = mean ? acc_t(1) / acc_t(hi - lo) : acc_t(1);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] *= scale;
        store_vals<Cache::kStream, acc_t, scalar_t, V>(dst0 + b * tab.total_D + d, acc);
      }
    }
  }
}

// Bag `bag` (global), indices [lo, hi), pooled into its place in the output by the whole warp.
template <typename scalar_t, typename index_t>
__device__ __forceinline__ void pool_one_bag(const scalar_t* __restrict__ w, const Tables& tab,
                                             const index_t* __restrict__ idx,
                                             const float* __restrict__ psw, int64_t lo,
                                             int64_t hi, int64_t bag, bool mean,
                                             scalar_t* __restrict__ out) {
  const int64_t t = bag / tab.B;
  scalar_t* dst = out + (bag % tab.B) * tab.total_D + tab.d_off[t];
  if (tab.vec_ok(t)) {
    pool_bag<scalar_t, index_t, kVec>(w, tab, idx, psw, lo, hi, t, mean, dst);
  } else {
    pool_bag<scalar_t, index_t, 1>(w, tab, idx, psw, lo, hi, t, mean, dst);
  }
}

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlock, kForwardMinBlocks)
    tbe_forward_kernel(const scalar_t* __restrict__ w, Tables tab,
                       const index_t* __restrict__ idx, const index_t* __restrict__ off, int64_t n,
                       const float* __restrict__ psw, bool mean, scalar_t* __restrict__ out) {
  WarpBags g;
  if (!warp_bags(tab.T * tab.B, tab.B, &g)) return;
  const int64_t bag0 = g.bag0, t0 = g.t0;
  const int nb = g.nb;
  int64_t begin = 0, end = 0;
  if (g.lane < nb) bag_range(off, bag0 + g.lane, n, &begin, &end);
  if (t0 == g.t1) {
    if (tab.vec_ok(t0)) {
      pool_group<scalar_t, index_t, kVec>(w, tab, idx, psw, bag0, nb, t0, begin, end, mean, out);
    } else {
      pool_group<scalar_t, index_t, 1>(w, tab, idx, psw, bag0, nb, t0, begin, end, mean, out);
    }
    return;
  }
  // A group across tables (at most T - 1 of them): bag by bag.
  for (int b = 0; b < nb; ++b) {
    const int64_t lo = __shfl_sync(kFull, begin, b), hi = __shfl_sync(kFull, end, b);
    pool_one_bag<scalar_t, index_t>(w, tab, idx, psw, lo, hi, bag0 + b, mean, out);
  }
}

// Long bags (many indices each on average): a warp per bag, so that more warps, each with its
// bag's rows in flight, cover the memory's latency than a warp pooling 32 bags in turn.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlock)
    tbe_forward_bags_kernel(const scalar_t* __restrict__ w, Tables tab,
                            const index_t* __restrict__ idx, const index_t* __restrict__ off,
                            int64_t n, const float* __restrict__ psw, bool mean,
                            scalar_t* __restrict__ out) {
  const int64_t bag = global_warp();
  if (bag >= tab.T * tab.B) return;
  int64_t begin, end;
  bag_range(off, bag, n, &begin, &end);
  pool_one_bag<scalar_t, index_t>(w, tab, idx, psw, begin, end, bag, mean, out);
}

// ---------------------------------------------------------------------------------------------
// Per-sample-weight gradient: warp per bag, a warp-wide dot product per index.

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlock)
    tbe_psw_grad_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ w,
                        Tables tab, const index_t* __restrict__ idx,
                        const index_t* __restrict__ off, int64_t n, float* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t bag = global_warp();
  if (bag >= tab.T * tab.B) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t t = bag / tab.B, b = bag % tab.B;
  const int64_t D = tab.dim(t), rows = tab.rows(t);
  const scalar_t* src = go + b * tab.total_D + tab.d_off[t];
  int64_t begin, end;
  bag_range(off, bag, n, &begin, &end);
  for (int64_t k = begin; k < end; ++k) {
    const int64_t i = static_cast<int64_t>(idx[k]);
    const int64_t base = tab.w_off[t] + i * D;
    if (i < 0 || i >= rows || base + D > tab.w_numel) continue;
    acc_t dot = 0;
    for (int64_t d = lane; d < D; d += kWarp)
      dot += static_cast<acc_t>(src[d]) * static_cast<acc_t>(w[base + d]);
    dot = warp_sum(dot);
    if (lane == 0) out[k] = static_cast<float>(dot);
  }
}

// ---------------------------------------------------------------------------------------------
// Validation: a warp checks 32 consecutive bags, lane i the offsets of bag i; when the 32 bags
// belong to one table their indices are one range, read 32 at a time.

template <typename index_t>
__global__ void __launch_bounds__(kBlock)
    tbe_validate_kernel(const int64_t* __restrict__ hcum, int64_t B, int64_t bags,
                        const index_t* __restrict__ idx, const index_t* __restrict__ off,
                        int64_t n, unsigned long long* __restrict__ result) {
  WarpBags g;
  if (!warp_bags(bags, B, &g)) return;
  const int64_t bag0 = g.bag0, t0 = g.t0, t1 = g.t1;
  const int lane = g.lane, nb = g.nb;
  const int64_t bag = bag0 + lane;
  int64_t o0 = 0, o1 = 0;
  unsigned long long err = kTbeValid;
  if (lane < nb) {
    o0 = off[bag];
    o1 = off[bag + 1];
    if (bag == 0 && o0 != 0) err = kTbeOffsetsStart * kTbeErrorShift;
    else if (bag == bags - 1 && o1 != n) err = kTbeOffsetsEnd * kTbeErrorShift + bags;
    else if (o1 < o0) err = kTbeOffsetsOrder * kTbeErrorShift + bag + 1;
    if (err != static_cast<unsigned long long>(kTbeValid)) atomicMin(result, err);
  }
  // Bad offsets are reported before any index (a lower code), so their indices need no check.
  if (__any_sync(kFull, err != static_cast<unsigned long long>(kTbeValid))) return;
  const int64_t begin = min(max(o0, int64_t(0)), n), end = min(max(o1, int64_t(0)), n);
  if (t0 == t1) {
    const int64_t rows = hcum[t0 + 1] - hcum[t0];
    const int64_t lo = __shfl_sync(kFull, begin, 0), hi = __shfl_sync(kFull, end, nb - 1);
    for (int64_t k = lo + lane; k < hi; k += kWarp) {
      const int64_t i = static_cast<int64_t>(idx[k]);
      if (i < 0 || i >= rows) atomicMin(result, kTbeIndexRange * kTbeErrorShift + k);
    }
    return;
  }
  if (lane < nb) {
    const int64_t t = bag / B;
    const int64_t rows = hcum[t + 1] - hcum[t];
    for (int64_t k = begin; k < end; ++k) {
      const int64_t i = static_cast<int64_t>(idx[k]);
      if (i < 0 || i >= rows) atomicMin(result, kTbeIndexRange * kTbeErrorShift + k);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

struct UpdateArgs {
  int64_t update;
  float lr, eps;
  float* momentum;   // [num_rows], row-wise Adagrad
};

// Row `mrow` (global) at element `base`, of D columns, has the combined gradient acc (lane's
// columns c * 32 * V + lane * V + j) and the current weights wpre (unused when writing the
// gradient): write the gradient or apply the optimizer. Called by a whole warp.
template <typename scalar_t, int V, int NC>
__device__ __forceinline__ void apply_row(const at::opmath_type<scalar_t> (&acc)[NC][V],
                                          const at::opmath_type<scalar_t> (&wpre)[NC][V],
                                          int64_t D, scalar_t* __restrict__ w,
                                          scalar_t* __restrict__ grad, int64_t base, int64_t mrow,
                                          const UpdateArgs& u) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  acc_t step = static_cast<acc_t>(u.lr);
  if (u.update == kTbeRowwiseAdagrad) {
    acc_t sq = 0;
#pragma unroll
    for (int c = 0; c < NC; ++c)
      if (c * kWarp * V + lane * V < D)
#pragma unroll
        for (int j = 0; j < V; ++j) sq += acc[c][j] * acc[c][j];
    sq = warp_sum(sq);
    const acc_t m = static_cast<acc_t>(u.momentum[mrow]) + sq / static_cast<acc_t>(D);
    if (lane == 0) u.momentum[mrow] = static_cast<float>(m);
    step = static_cast<acc_t>(u.lr) / (sqrt(m) + static_cast<acc_t>(u.eps));
  }
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int64_t d = c * kWarp * V + lane * V;
    if (d >= D) continue;
    if (u.update == kTbeWriteGrad) {
      store_vals<Cache::kNormal, acc_t, scalar_t, V>(grad + base + d, acc[c]);
    } else {
      acc_t wv[V];
#pragma unroll
      for (int j = 0; j < V; ++j) wv[j] = wpre[c][j] - step * acc[c][j];
      store_vals<Cache::kStream, acc_t, scalar_t, V>(w + base + d, wv);
    }
  }
}

struct Sorted {
  const int32_t* key;     // [n] global rows, ascending; num_rows for a bad index (sorted last)
  const int32_t* val;     // [n] bag, or position with per-sample weights
  const int32_t* bag_of;  // [n] bag of each position, with per-sample weights
  const float* psw;
  int64_t n;
  int32_t num_rows;
};

// A run longer than its head's slice and the next, as its head's warp records it.
struct LongRun {
  int64_t wrow;   // the row's first element in the weights
  int32_t slice;  // the slice of its first entry
  int32_t key;    // its global row
  int32_t D;
};

// Partial sums of long runs, acc_t [2 * slices][stride]: slot 2s + 1 holds the piece of a run
// that starts in slice s, slot 2s the piece that slice s starts with when the run began earlier.
// `runs` lists the long runs; `hot` those the warp combine leaves to the block combine.
struct LongRuns {
  void* partials;
  int64_t stride, slices;
  LongRun* runs;
  int32_t* count;
  LongRun* hot;
  int32_t* hot_count;
};

// What a lane knows of its sorted entry: where its bag's gradient row and its table row start,
// the row's width, and the factor of its gradient (mean pooling, per-sample weight).
struct Entry {
  int64_t src = 0, wrow = 0;
  int32_t D = 0, key = 0;
  float scale = 0;
  bool vec = false;
};

template <typename index_t>
__device__ __forceinline__ Entry entry_of(const Tables& tab, const Sorted& so,
                                          const index_t* __restrict__ off, bool mean, int32_t key,
                                          int32_t v) {
  Entry e;
  const int64_t bag = so.psw ? so.bag_of[v] : v;
  const int64_t t = bag / tab.B;
  const int64_t D = tab.dim(t);
  e.src = (bag % tab.B) * tab.total_D + tab.d_off[t];
  e.wrow = tab.w_off[t] + (key - tab.hcum[t]) * D;
  e.D = static_cast<int32_t>(D);
  e.key = key;
  float s = 1.0f;
  if (mean) {
    int64_t b0, b1;
    bag_range(off, bag, so.n, &b0, &b1);
    s = 1.0f / static_cast<float>(b1 - b0);  // the bag holds this entry: b1 > b0
  }
  if (so.psw) s *= so.psw[v];
  e.scale = s;
  e.vec = tab.vec_ok(t);
  return e;
}

// Gradient rows a lane loads before summing any: fewer when a row takes more registers.
template <typename acc_t, int V, int NC>
constexpr int batch_for() {
  constexpr int words = static_cast<int>(sizeof(acc_t) / 4) * V * NC;
  return words <= 4 ? 4 : (words <= 8 ? 2 : 1);
}

template <typename acc_t, int V, int NC>
__device__ __forceinline__ void store_partial(acc_t* __restrict__ p, const acc_t (&acc)[NC][V],
                                              int D) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int d = c * kWarp * V + lane * V;
    if (d < D) store_vals<Cache::kNormal, acc_t, acc_t, V>(p + d, acc[c]);
  }
}

// Sums the gradient rows of the entries in lanes [begin, end) of `me` into acc, in order. At an
// entry in `tails` the sum so far is a run's (or a piece's): it goes to the partial slot of
// `to_cont` or `to_head` if the entry is in that mask, else to the row's update; then acc
// restarts from zero.
template <typename scalar_t, int V, int NC>
__device__ __forceinline__ void sum_entries(
    const scalar_t* __restrict__ go, scalar_t* __restrict__ w, scalar_t* __restrict__ grad,
    const Entry& me, int begin, int end, uint32_t tails, uint32_t to_cont, uint32_t to_head,
    at::opmath_type<scalar_t>* __restrict__ part_cont,
    at::opmath_type<scalar_t>* __restrict__ part_head, at::opmath_type<scalar_t> (&acc)[NC][V],
    const UpdateArgs& u) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kB = batch_for<acc_t, V, NC>();
  const int lane = threadIdx.x % kWarp;
  const bool need_w = u.update != kTbeWriteGrad;
  const uint32_t to_partial = to_cont | to_head;
  for (int p0 = begin; p0 < end; p0 += kB) {
    acc_t g[kB][NC][V], wv[kB][NC][V];
#pragma unroll
    for (int q = 0; q < kB; ++q) {
      const int p = min(p0 + q, end - 1);
      const bool in = p0 + q < end;
      const int64_t src = __shfl_sync(kFull, me.src, p);
      const int64_t wrow = __shfl_sync(kFull, me.wrow, p);
      const int D = __shfl_sync(kFull, me.D, p);
      const bool load_w = in && need_w && ((tails >> p) & 1u) && !((to_partial >> p) & 1u);
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int d = c * kWarp * V + lane * V;
        if (in && d < D) {
          load_vals<Cache::kKeep, acc_t, scalar_t, V>(go + src + d, g[q][c]);
        } else {
#pragma unroll
          for (int j = 0; j < V; ++j) g[q][c][j] = 0;
        }
        if (load_w && d < D) {
          load_vals<Cache::kStream, acc_t, scalar_t, V>(w + wrow + d, wv[q][c]);
        } else {
#pragma unroll
          for (int j = 0; j < V; ++j) wv[q][c][j] = 0;
        }
      }
    }
#pragma unroll
    for (int q = 0; q < kB; ++q) {
      const int p = p0 + q;
      if (p < end) {
        const acc_t s = static_cast<acc_t>(__shfl_sync(kFull, me.scale, p));
#pragma unroll
        for (int c = 0; c < NC; ++c)
#pragma unroll
          for (int j = 0; j < V; ++j) acc[c][j] += s * g[q][c][j];
        if ((tails >> p) & 1u) {
          const int D = __shfl_sync(kFull, me.D, p);
          if ((to_cont >> p) & 1u) {
            store_partial<acc_t, V, NC>(part_cont, acc, D);
          } else if ((to_head >> p) & 1u) {
            store_partial<acc_t, V, NC>(part_head, acc, D);
          } else {
            const int64_t wrow = __shfl_sync(kFull, me.wrow, p);
            const int32_t key = __shfl_sync(kFull, me.key, p);
            apply_row<scalar_t, V, NC>(acc, wv[q], D, w, grad, wrow, key, u);
          }
#pragma unroll
          for (int c = 0; c < NC; ++c)
#pragma unroll
            for (int j = 0; j < V; ++j) acc[c][j] = 0;
        }
      }
    }
  }
}

// Warp s takes the sorted entries [32 s, 32 s + 32) and finishes the runs that start there (see
// the file's comment). Which warp sums what, for a run from slice sh to slice se:
//   se == sh or se == sh + 1: warp sh, whole;
//   se >= sh + 2: each warp its piece into a partial slot; warp sh lists the run in `runs`.
// Warp sh tells the cases apart from the next slice's keys and the key after them, warp se from
// the key 33 entries before its slice (the run began in the slice before iff that key differs).
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kBlock, kReduceMinBlocks)
    tbe_reduce_kernel(const scalar_t* __restrict__ go, scalar_t* __restrict__ w,
                      scalar_t* __restrict__ grad, Tables tab, Sorted so,
                      const index_t* __restrict__ off, bool mean, LongRuns lr, UpdateArgs u) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarp;
  const int64_t s = global_warp();
  const int64_t n = so.n, lo = s * kWarp;
  if (lo >= n) return;
  int m = static_cast<int>(min(static_cast<int64_t>(kWarp), n - lo));
  const int m2 =
      static_cast<int>(max(int64_t(0), min(static_cast<int64_t>(kWarp), n - lo - kWarp)));
  const int32_t k = lane < m ? so.key[lo + lane] : -1;
  const int32_t v = lane < m ? so.val[lo + lane] : 0;
  const int32_t k2 = lane < m2 ? so.key[lo + kWarp + lane] : -1;
  // The keys 1 and 33 entries before the slice and the one 32 entries past its end.
  int32_t around = -1;
  if (lane == 0 && lo > 0) around = so.key[lo - 1];
  if (lane == 1 && lo > kWarp) around = so.key[lo - kWarp - 1];
  if (lane == 2 && lo + 2 * kWarp < n) around = so.key[lo + 2 * kWarp];
  const int32_t prev1 = __shfl_sync(kFull, around, 0), prev33 = __shfl_sync(kFull, around, 1);
  const int32_t next64 = __shfl_sync(kFull, around, 2);
  // Bad indices sort last: the slice ends where they start.
  const uint32_t bad = __ballot_sync(kFull, lane < m && k >= so.num_rows);
  if (bad != 0) m = __ffs(bad) - 1;
  if (m == 0) return;
  const int32_t k_first = __shfl_sync(kFull, k, 0), k_last = __shfl_sync(kFull, k, m - 1);
  const int32_t k2_first = __shfl_sync(kFull, k2, 0);
  const bool cont_next = bad == 0 && m2 > 0 && k2_first == k_last;
  int32_t kprev = __shfl_up_sync(kFull, k, 1), knext = __shfl_down_sync(kFull, k, 1);
  if (lane == 0) kprev = prev1;
  if (lane == kWarp - 1) knext = k2_first;
  const uint32_t heads = __ballot_sync(kFull, lane < m && k != kprev);
  uint32_t tails = __ballot_sync(kFull, lane < m && k != knext);
  const uint32_t in_slice = m == kWarp ? kFull : (1u << m) - 1;

  // The piece the slice starts with, if its run began in an earlier slice.
  int begin = 0;
  uint32_t to_cont = 0, to_head = 0;
  if ((heads & 1u) == 0) {
    const int h1 = heads != 0 ? __ffs(heads) - 1 : m;
    const bool ends_here = h1 < m || !cont_next;
    if (prev33 != k_first && ends_here) {
      begin = h1;  // summed whole by the previous slice's warp
    } else {
      to_cont = h1 == kWarp ? kFull : (1u << h1) - 1;
    }
  }
  if (begin == m) return;
  // The last run, if it starts here and goes on into the next slice.
  bool through = false;
  int stop2 = 0;
  if (cont_next && heads != 0) {
    const int hl = 31 - __clz(heads);
    const uint32_t diff = __ballot_sync(kFull, lane < m2 && k2 != k_last);
    if (diff != 0 || next64 != k_last) {  // it ends in the next slice
      through = true;
      stop2 = diff != 0 ? __ffs(diff) - 1 : m2;
    } else {
      to_head = in_slice & ~((1u << hl) - 1);
    }
  }
  if (cont_next && !through) tails |= 1u << (m - 1);

  Entry me, me2;
  if (lane >= begin && lane < m) me = entry_of(tab, so, off, mean, k, v);
  if (through && lane < stop2) me2 = entry_of(tab, so, off, mean, k2, so.val[lo + kWarp + lane]);
  const bool all_vec = __ballot_sync(kFull, lane >= begin && lane < m && !me.vec) == 0;
  const int max_D = static_cast<int>(__reduce_max_sync(kFull, static_cast<unsigned>(me.D)));
  acc_t* parts = static_cast<acc_t*>(lr.partials);
  acc_t* part_cont = parts + 2 * s * lr.stride;
  acc_t* part_head = part_cont + lr.stride;
  auto run = [&](auto v_tag, auto nc_tag) {
    constexpr int V = decltype(v_tag)::value, NC = decltype(nc_tag)::value;
    acc_t acc[NC][V];
#pragma unroll
    for (int c = 0; c < NC; ++c)
#pragma unroll
      for (int j = 0; j < V; ++j) acc[c][j] = 0;
    sum_entries<scalar_t, V, NC>(go, w, grad, me, begin, m, tails, to_cont, to_head, part_cont,
                                 part_head, acc, u);
    if (through)
      sum_entries<scalar_t, V, NC>(go, w, grad, me2, 0, stop2, 1u << (stop2 - 1), 0, 0, nullptr,
                                   nullptr, acc, u);
  };
  if (all_vec && max_D <= kWarp * kVec) {
    run(Int<kVec>{}, Int<1>{});
  } else if (all_vec) {
    run(Int<kVec>{}, Int<chunks_for<kVec>()>{});
  } else {
    run(Int<1>{}, Int<chunks_for<1>()>{});
  }
  if (to_head != 0) {
    const int64_t wrow = __shfl_sync(kFull, me.wrow, m - 1);
    const int32_t D = __shfl_sync(kFull, me.D, m - 1);
    if (lane == 0)
      lr.runs[atomicAdd(lr.count, 1)] = LongRun{wrow, static_cast<int32_t>(s), k_last, D};
  }
}

// Parts of a long run: part 0 is its head piece (slot 2 sh + 1), part j > 0 the piece that slice
// sh + j starts with (slot 2 (sh + j)).
template <typename acc_t>
__device__ __forceinline__ const acc_t* part_of(const LongRuns& lr, int64_t sh, int64_t j) {
  return static_cast<const acc_t*>(lr.partials) + (j == 0 ? 2 * sh + 1 : 2 * (sh + j)) * lr.stride;
}

// Runs of at most this many parts are combined by one warp; longer (hot) ones by a block.
constexpr int kWarpParts = 64;

// A warp per long run: it fetches the row and the first parts while it finds how many slices
// start with the run's key (32 probed at a time), adds the parts in order and applies the update.
// A lane holds the columns c * 32 + lane, c < kCols.
template <typename scalar_t, int kCols>
__global__ void __launch_bounds__(kBlock)
    tbe_combine_warps_kernel(scalar_t* __restrict__ w, scalar_t* __restrict__ grad,
                             Sorted so, LongRuns lr, UpdateArgs u) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kInFlight = 32 / kCols;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t count = *lr.count;
  for (int64_t i = global_warp(); i < count; i += warps) {
    const LongRun run = lr.runs[i];
    const int64_t sh = run.slice, D = run.D, avail = lr.slices - sh;
    acc_t wv[kCols][1], first[kInFlight][kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int64_t d = c * kWarp + lane;
      wv[c][0] = (d < D && u.update != kTbeWriteGrad) ? static_cast<acc_t>(w[run.wrow + d]) : 0;
    }
    // Fetched before the run's length is known: slots past the run are read and dropped.
#pragma unroll
    for (int r = 0; r < kInFlight; ++r) {
      const acc_t* p = part_of<acc_t>(lr, sh, r);
#pragma unroll
      for (int c = 0; c < kCols; ++c)
        first[r][c] = (r < avail && c * kWarp + lane < D) ? p[c * kWarp + lane] : acc_t(0);
    }
    int64_t nparts = 1;
    for (;;) {
      const int64_t x = sh + nparts + lane;
      const uint32_t same =
          __ballot_sync(kFull, x < lr.slices && so.key[x * kWarp] == run.key);
      const int c = same == kFull ? kWarp : __ffs(~same) - 1;
      nparts += c;
      if (c < kWarp || nparts > kWarpParts) break;
    }
    if (nparts > kWarpParts) {
      if (lane == 0) lr.hot[atomicAdd(lr.hot_count, 1)] = run;
      continue;
    }
    acc_t acc[kCols][1];
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[c][0] = 0;
#pragma unroll
    for (int r = 0; r < kInFlight; ++r)
      if (r < nparts)
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[c][0] += first[r][c];
    for (int64_t j0 = kInFlight; j0 < nparts; j0 += kInFlight) {
      acc_t v[kInFlight][kCols];
#pragma unroll
      for (int r = 0; r < kInFlight; ++r) {
        const acc_t* p = part_of<acc_t>(lr, sh, j0 + r);
#pragma unroll
        for (int c = 0; c < kCols; ++c)
          v[r][c] = (j0 + r < nparts && c * kWarp + lane < D) ? p[c * kWarp + lane] : acc_t(0);
      }
#pragma unroll
      for (int r = 0; r < kInFlight; ++r)
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[c][0] += v[r][c];
    }
    apply_row<scalar_t, 1, kCols>(acc, wv, D, w, grad, run.wrow, run.key, u);
  }
}

// A block per hot run (more than kWarpParts parts): the block counts the slices that start with
// the run's key, 256 at a time, warp k adds the parts k, k + 8, ... (4 in flight, in a fixed
// order), the block adds the 8 warp sums in order, and warp 0 applies the update.
template <typename scalar_t, int kCols>
__global__ void __launch_bounds__(kBlock)
    tbe_combine_hot_kernel(scalar_t* __restrict__ w, scalar_t* __restrict__ grad, Sorted so,
                           LongRuns lr, UpdateArgs u) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kInFlight = 4;
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);  // [kWarpsPerBlock][stride]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t count = *lr.hot_count;
  for (int64_t i = blockIdx.x; i < count; i += gridDim.x) {
    const LongRun run = lr.hot[i];
    const int64_t sh = run.slice, D = run.D;
    int64_t nparts = 1;
    for (;;) {
      const int64_t x = sh + nparts + threadIdx.x;
      const int c = __syncthreads_count(x < lr.slices && so.key[x * kWarp] == run.key);
      nparts += c;
      if (c < kBlock) break;
    }
    acc_t sum[kInFlight][kCols];
#pragma unroll
    for (int r = 0; r < kInFlight; ++r)
#pragma unroll
      for (int c = 0; c < kCols; ++c) sum[r][c] = 0;
    for (int64_t j0 = warp; j0 < nparts; j0 += kInFlight * kWarpsPerBlock) {
#pragma unroll
      for (int r = 0; r < kInFlight; ++r) {
        const int64_t j = j0 + r * kWarpsPerBlock;
        if (j < nparts) {
          const acc_t* p = part_of<acc_t>(lr, sh, j);
#pragma unroll
          for (int c = 0; c < kCols; ++c)
            if (c * kWarp + lane < D) sum[r][c] += p[c * kWarp + lane];
        }
      }
    }
#pragma unroll
    for (int c = 0; c < kCols; ++c)
      if (c * kWarp + lane < D)
        smem[warp * lr.stride + c * kWarp + lane] =
            (sum[0][c] + sum[1][c]) + (sum[2][c] + sum[3][c]);
    __syncthreads();
    if (warp == 0) {
      acc_t acc[kCols][1], wv[kCols][1];
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int64_t d = c * kWarp + lane;
        acc[c][0] = 0;
        wv[c][0] = 0;
        if (d < D) {
          for (int k = 0; k < kWarpsPerBlock; ++k) acc[c][0] += smem[k * lr.stride + d];
          if (u.update != kTbeWriteGrad) wv[c][0] = static_cast<acc_t>(w[run.wrow + d]);
        }
      }
      apply_row<scalar_t, 1, kCols>(acc, wv, D, w, grad, run.wrow, run.key, u);
    }
    __syncthreads();
  }
}

// Keys and values of every index: key = global row (num_rows for a bad index; indices outside
// every bag keep the num_rows they were filled with), value = bag, or position when there are
// per-sample weights. A warp takes 32 consecutive bags; when they are of one table and back to
// back, their indices are one range, read 32 at a time, and each lane finds its index's bag by a
// binary search over the lanes' bag starts.
template <typename index_t>
__global__ void __launch_bounds__(kBlock)
    tbe_keys_kernel(Tables tab, const index_t* __restrict__ idx, const index_t* __restrict__ off,
                    int64_t n, bool by_position, int32_t num_rows, int32_t* __restrict__ key,
                    int32_t* __restrict__ val, int32_t* __restrict__ bag_of) {
  WarpBags g;
  if (!warp_bags(tab.T * tab.B, tab.B, &g)) return;
  const int64_t bag0 = g.bag0, t0 = g.t0, t1 = g.t1;
  const int lane = g.lane, nb = g.nb;
  int64_t begin = 0, end = 0;
  if (lane < nb) bag_range(off, bag0 + lane, n, &begin, &end);
  const int64_t prev_end = __shfl_up_sync(kFull, end, 1);
  const bool back_to_back = __all_sync(kFull, lane == 0 || lane >= nb || begin == prev_end);
  auto emit = [&](int64_t k, int64_t bag, int64_t first, int64_t rows) {
    const int64_t i = static_cast<int64_t>(idx[k]);
    key[k] = (i >= 0 && i < rows) ? static_cast<int32_t>(first + i) : num_rows;
    val[k] = static_cast<int32_t>(by_position ? k : bag);
    if (by_position) bag_of[k] = static_cast<int32_t>(bag);
  };
  if (t0 == t1 && back_to_back) {
    const int64_t first = tab.hcum[t0], rows = tab.hcum[t0 + 1] - first;
    const int64_t lo = __shfl_sync(kFull, begin, 0), hi = __shfl_sync(kFull, end, nb - 1);
    for (int64_t k0 = lo; k0 < hi; k0 += kWarp) {
      const int64_t k = k0 + lane;
      int b = 0;  // the last bag starting at or before k
#pragma unroll
      for (int step = kWarp / 2; step > 0; step >>= 1) {
        const int c = b + step;
        const int64_t start = __shfl_sync(kFull, begin, c);
        if (c < nb && start <= k) b = c;
      }
      if (k < hi) emit(k, bag0 + b, first, rows);
    }
    return;
  }
  if (lane < nb) {
    const int64_t bag = bag0 + lane, t = bag / tab.B;
    for (int64_t k = begin; k < end; ++k) emit(k, bag, tab.hcum[t], tab.hcum[t + 1] - tab.hcum[t]);
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

Tables make_tables(const at::Tensor& weights, const at::Tensor& weights_offsets,
                   const at::Tensor& D_offsets, const int64_t* hcum, const at::Tensor& offsets,
                   int64_t total_D, bool aligned) {
  Tables tab;
  tab.w_off = weights_offsets.const_data_ptr<int64_t>();
  tab.d_off = D_offsets.const_data_ptr<int64_t>();
  tab.hcum = hcum;
  tab.T = weights_offsets.numel();
  tab.B = tab.T > 0 ? (offsets.numel() - 1) / tab.T : 0;
  tab.total_D = total_D;
  tab.w_numel = weights.numel();
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
  const Tables tab = make_tables(weights, weights_offsets, D_offsets, nullptr, offsets, total_D,
                                 aligned16(weights.const_data_ptr()) && aligned16(out.data_ptr()));
  const int64_t bags = T * B;
  if (bags == 0 || total_D == 0) return out;
  at::Tensor psw;
  if (per_sample_weights.has_value()) psw = per_sample_weights->to(at::kFloat).contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t groups = (bags + kWarp - 1) / kWarp;  // a warp per 32 bags
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_forward_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                    "tbe_forward_cuda", [&] {
      const scalar_t* w = weights.const_data_ptr<scalar_t>();
      const index_t* idx = indices.const_data_ptr<index_t>();
      const index_t* off = offsets.const_data_ptr<index_t>();
      const float* sw = psw.defined() ? psw.const_data_ptr<float>() : nullptr;
      // The mean bag length is known on the host without a sync.
      if (indices.numel() >= kLongBag * bags) {
        tbe_forward_bags_kernel<scalar_t, index_t>
            <<<grid_for(bags, kWarpsPerBlock), kBlock, 0, stream>>>(
                w, tab, idx, off, indices.numel(), sw, pooling == kTbeMean,
                out.data_ptr<scalar_t>());
      } else {
        tbe_forward_kernel<scalar_t, index_t>
            <<<grid_for(groups, kWarpsPerBlock), kBlock, 0, stream>>>(
                w, tab, idx, off, indices.numel(), sw, pooling == kTbeMean,
                out.data_ptr<scalar_t>());
      }
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
  const Tables tab =
      make_tables(weights, weights_offsets, D_offsets, nullptr, offsets, go.size(1), false);
  at::Tensor out = at::zeros({indices.numel()}, weights.options().dtype(at::kFloat));
  const int64_t bags = tab.T * tab.B;
  if (bags == 0 || indices.numel() == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_psw_grad_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                    "tbe_psw_grad_cuda", [&] {
      tbe_psw_grad_kernel<scalar_t, index_t><<<grid_for(bags, kWarpsPerBlock), kBlock, 0, stream>>>(
          go.const_data_ptr<scalar_t>(), weights.const_data_ptr<scalar_t>(), tab,
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
    tbe_validate_kernel<index_t>
        <<<grid_for((bags + kWarp - 1) / kWarp, kWarpsPerBlock), kBlock, 0, stream>>>(
        hash_size_cumsum.const_data_ptr<int64_t>(), bags / T, bags,
        indices.const_data_ptr<index_t>(), offsets.const_data_ptr<index_t>(), indices.numel(),
        reinterpret_cast<unsigned long long*>(result.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result;
}


namespace {

// The backward's first step: every index's key (its table's first global row + the index;
// num_rows for a bad one) and value (its bag, or with by_position its position, bag_of then
// holding its bag), sorted by key, stably: int32 [N] each (bag_of [0] without by_position).
std::tuple<at::Tensor, at::Tensor, at::Tensor> sort_keys(const at::Tensor& hash_size_cumsum,
                                                         const at::Tensor& indices,
                                                         const at::Tensor& offsets,
                                                         int64_t num_rows, bool by_position) {
  const int64_t n = indices.numel();
  const auto i32 = indices.options().dtype(at::kInt);
  at::Tensor key = at::full({n}, static_cast<int32_t>(num_rows), i32);
  at::Tensor val = at::empty({n}, i32);
  at::Tensor bag_of = at::empty({by_position ? n : 0}, i32);
  at::Tensor sorted_key = at::empty({n}, i32), sorted_val = at::empty({n}, i32);
  Tables tab{};
  tab.hcum = hash_size_cumsum.const_data_ptr<int64_t>();
  tab.T = hash_size_cumsum.numel() - 1;
  tab.B = tab.T > 0 ? (offsets.numel() - 1) / tab.T : 0;
  const int64_t bags = tab.T * tab.B;
  if (n == 0 || bags == 0) return {sorted_key, sorted_val, bag_of};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "tbe_keys", [&] {
    tbe_keys_kernel<index_t>
        <<<grid_for((bags + kWarp - 1) / kWarp, kWarpsPerBlock), kBlock, 0, stream>>>(
        tab, indices.const_data_ptr<index_t>(), offsets.const_data_ptr<index_t>(), n,
        by_position, static_cast<int32_t>(num_rows), key.data_ptr<int32_t>(),
        val.data_ptr<int32_t>(), by_position ? bag_of.data_ptr<int32_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // On the bits a row number can have.
  int end_bit = 1;
  while (end_bit < 31 && (int64_t(1) << end_bit) <= num_rows) ++end_bit;
  const int num_items = static_cast<int>(n);
  size_t sort_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, key.const_data_ptr<int32_t>(), sorted_key.data_ptr<int32_t>(),
      val.const_data_ptr<int32_t>(), sorted_val.data_ptr<int32_t>(), num_items, 0, end_bit,
      stream));
  at::Tensor sort_tmp =
      at::empty({static_cast<int64_t>(sort_bytes)}, indices.options().dtype(at::kByte));
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      sort_tmp.data_ptr(), sort_bytes, key.const_data_ptr<int32_t>(),
      sorted_key.data_ptr<int32_t>(), val.const_data_ptr<int32_t>(),
      sorted_val.data_ptr<int32_t>(), num_items, 0, end_bit, stream));
  return {sorted_key, sorted_val, bag_of};
}

// The backward's second step, from the sorted keys: each run summed and its row updated.
void reduce_sorted(const at::Tensor& grad_output, const at::Tensor& weights,
                   const at::Tensor& weights_offsets, const at::Tensor& D_offsets,
                   const at::Tensor& hash_size_cumsum, const at::Tensor& sorted_key,
                   const at::Tensor& sorted_val, const at::Tensor& bag_of,
                   const at::Tensor& offsets, int64_t pooling,
                   const c10::optional<at::Tensor>& per_sample_weights, int64_t update, double lr,
                   double eps, const c10::optional<at::Tensor>& momentum,
                   const c10::optional<at::Tensor>& grad, int64_t num_rows, int64_t max_D) {
  const int64_t n = sorted_key.numel();
  const bool has_psw = per_sample_weights.has_value();
  at::Tensor go = grad_output.contiguous();
  bool aligned = aligned16(weights.const_data_ptr()) && aligned16(go.const_data_ptr());
  if (grad.has_value()) aligned = aligned && aligned16(grad->const_data_ptr());
  const Tables tab = make_tables(weights, weights_offsets, D_offsets,
                                 hash_size_cumsum.const_data_ptr<int64_t>(), offsets, go.size(1),
                                 aligned);
  if (tab.T * tab.B == 0) return;  // no bag holds an index
  at::Tensor psw;
  if (has_psw) psw = per_sample_weights->to(at::kFloat).contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto i32 = sorted_key.options();

  Sorted so;
  so.key = sorted_key.const_data_ptr<int32_t>();
  so.val = sorted_val.const_data_ptr<int32_t>();
  so.bag_of = has_psw ? bag_of.const_data_ptr<int32_t>() : nullptr;
  so.psw = has_psw ? psw.const_data_ptr<float>() : nullptr;
  so.n = n;
  so.num_rows = static_cast<int32_t>(num_rows);

  UpdateArgs u;
  u.update = update;
  u.lr = static_cast<float>(lr);
  u.eps = static_cast<float>(eps);
  u.momentum = momentum.has_value() ? momentum->data_ptr<float>() : nullptr;

  const int64_t slices = (n + kWarp - 1) / kWarp;
  const int64_t stride = (max_D + kVec - 1) / kVec * kVec;  // keeps each slot 16-byte aligned
  // A long run spans three slices or more and may share its first with the run before, so each
  // takes two slices of its own; a hot one more than kWarpParts.
  const int64_t most = slices / 2 + 1, most_hot = slices / kWarpParts + 1;
  const auto run_bytes = sorted_key.options().dtype(at::kByte);
  at::Tensor runs = at::empty({most * static_cast<int64_t>(sizeof(LongRun))}, run_bytes);
  at::Tensor hot = at::empty({most_hot * static_cast<int64_t>(sizeof(LongRun))}, run_bytes);
  at::Tensor counts = at::zeros({2}, i32);
  AT_DISPATCH_INDEX_TYPES(offsets.scalar_type(), "tbe_backward_cuda", [&] {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights.scalar_type(),
                                    "tbe_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      at::Tensor partials = at::empty(
          {2 * slices * stride}, weights.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      LongRuns lruns;
      lruns.partials = partials.data_ptr();
      lruns.stride = stride;
      lruns.slices = slices;
      lruns.runs = reinterpret_cast<LongRun*>(runs.data_ptr());
      lruns.count = counts.data_ptr<int32_t>();
      lruns.hot = reinterpret_cast<LongRun*>(hot.data_ptr());
      lruns.hot_count = counts.data_ptr<int32_t>() + 1;
      scalar_t* gw = grad.has_value() ? grad->data_ptr<scalar_t>() : nullptr;
      scalar_t* w = weights.data_ptr<scalar_t>();
      tbe_reduce_kernel<scalar_t, index_t>
          <<<grid_for(slices, kWarpsPerBlock), kBlock, 0, stream>>>(
              go.const_data_ptr<scalar_t>(), w, gw, tab, so, offsets.const_data_ptr<index_t>(),
              pooling == kTbeMean, lruns, u);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const int warps_grid = static_cast<int>(
          std::min<int64_t>(grid_for(most, kWarpsPerBlock), resident_grid(4)));
      const int hot_grid = static_cast<int>(std::min<int64_t>(most_hot, resident_grid(4)));
      const size_t smem = sizeof(acc_t) * kWarpsPerBlock * stride;
      auto combine = [&](auto cols) {
        constexpr int kCols = decltype(cols)::value;
        tbe_combine_warps_kernel<scalar_t, kCols>
            <<<warps_grid, kBlock, 0, stream>>>(w, gw, so, lruns, u);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        tbe_combine_hot_kernel<scalar_t, kCols>
            <<<hot_grid, kBlock, smem, stream>>>(w, gw, so, lruns, u);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (max_D <= 4 * kWarp) {
        combine(Int<4>{});
      } else {
        combine(Int<kMaxDim / kWarp>{});
      }
    });
  });
}

}  // namespace

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
  if (indices.numel() == 0 || num_rows == 0 || max_D == 0) return;
  const auto [sorted_key, sorted_val, bag_of] = sort_keys(
      hash_size_cumsum, indices, offsets, num_rows, per_sample_weights.has_value());
  reduce_sorted(grad_output, weights, weights_offsets, D_offsets, hash_size_cumsum, sorted_key,
                sorted_val, bag_of, offsets, pooling, per_sample_weights, update, lr, eps,
                momentum, grad, num_rows, max_D);
}

TORCH_LIBRARY_IMPL(mlperf_fast, CUDA, m) {
  m.impl("tbe_forward", &tbe_forward_cuda);
  m.impl("tbe_backward_", &tbe_backward_cuda);
  m.impl("tbe_per_sample_weights_grad", &tbe_per_sample_weights_grad_cuda);
  m.impl("tbe_validate", &tbe_validate_cuda);
}

}  // namespace mlperf_fast
