// LAMB and Adam / AdamW steps on the GPU.
//
// LAMB, per batch of tensors (all of them unless batch_elems > 0):
//   pass 1  one block per chunk: reads p, g, m, v; writes m, v; leaves the chunk's sums of p^2
//           and update^2; the last block of each tensor to finish (an integer counter) sums its
//           tensor's chunk sums in chunk order, so the per-tensor norms come out of the same
//           launch, deterministically, with no floating-point atomics.
//   pass 2  one block per chunk, in reverse block order: reads p, m, v, recomputes the update
//           (the same expression as pass 1), writes p - lr * trust_ratio * update. Walking the
//           chunks backwards starts with the data pass 1 touched last, which is still in L2;
//           with batches smaller than L2 most of pass 2 reads L2 rather than HBM.
// Adam / AdamW: pass 1 alone, applying the update directly.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "common/multi_tensor_apply.cuh"
#include "common/optim_cuda.cuh"
#include "common/reduce.cuh"
#include "lamb/lamb.h"

namespace mlperf_fast {

namespace {

constexpr int kBlock = 256;
// Elements per block of the CUDA passes. Larger than the CPU's kOptimChunk: a block's setup
// (the step count, bias corrections, grad prologue) is paid once per 32Ki elements, and a
// launch of TensorListMeta::kMaxBlocks chunks covers 64Mi elements, so a pass over BERT-large
// is five launches rather than twenty.
constexpr int64_t kCudaChunk = 32768;
// Packs per thread loaded before any is used: kPackUnroll x (up to 4 lists) 16-byte loads in
// flight per thread. The stores of one group come after all its loads, so no aliasing between
// lists can serialize them.
constexpr int kPackUnroll = 2;

// Calls body.template run<kPack, kPackUnroll>(k, stride) for groups of kPackUnroll packs that
// are `stride` elements apart, then run<kPack, 1> for the remaining packs and run<1, 1> for the
// remaining elements (and for everything when not `aligned`).
template <typename Body>
__device__ __forceinline__ void for_each_pack_group(int64_t len, bool aligned, Body& body) {
  int64_t tail = 0;
  if (aligned) {
    const int64_t packs = len / kPack;
    constexpr int64_t kGroup = static_cast<int64_t>(kBlock) * kPackUnroll;
    int64_t q = threadIdx.x;
    for (; q + (kPackUnroll - 1) * kBlock < packs; q += kGroup)
      body.template run<kPack, kPackUnroll>(q * kPack, kBlock * kPack);
    for (; q < packs; q += kBlock) body.template run<kPack, 1>(q * kPack, 0);
    tail = packs * kPack;
  }
  for (int64_t k = tail + threadIdx.x; k < len; k += kBlock) body.template run<1, 1>(k, 0);
}

// The Adam direction of optim_math.h with the bias corrections applied as reciprocals computed
// once per block rather than divided per element (within an ulp of adam_direction).
template <typename T>
struct Direction {
  T inv_bc1, inv_bc2, eps, weight_decay;
  bool adam_w_mode;

  __device__ void init(const AdamCoeffs<T>& c) {
    inv_bc1 = T(1) / c.bc1;
    inv_bc2 = T(1) / c.bc2;
    eps = c.eps;
    weight_decay = c.weight_decay;
    adam_w_mode = c.adam_w_mode;
  }

  __device__ __forceinline__ T operator()(T p, T m, T v) const {
    T u = (m * inv_bc1) / (mf_sqrt(v * inv_bc2) + eps);
    if (adam_w_mode) u += weight_decay * p;
    return u;
  }
};
// Lists of a launch: the math weights (master or params), grads, exp_avgs, exp_avg_sqs, steps,
// and the low-precision params that receive the rounded master weights.
constexpr int kDepth = 6;
using Meta = TensorListMeta<kDepth>;

// One chunk's pointers and coefficients; run<N>(k) handles elements k .. k+N-1.
template <typename T, typename G, bool kMaster, bool kLamb>
struct ChunkBody {
  T* w;
  const G* g;
  T* m;
  T* v;
  G* model;
  AdamCoeffs<T> co;
  Direction<T> dir;
  T inv_divisor, one_minus_beta2, lr;
  T pp = 0, uu = 0;

  __device__ ChunkBody(const Meta& meta, int slot, int64_t begin, const AdamArgs& a,
                       double divisor_, T lr_) {
    w = static_cast<T*>(meta.addr[0][slot]) + begin;
    g = static_cast<const G*>(meta.addr[1][slot]) + begin;
    m = static_cast<T*>(meta.addr[2][slot]) + begin;
    v = static_cast<T*>(meta.addr[3][slot]) + begin;
    model = kMaster ? static_cast<G*>(meta.addr[5][slot]) + begin : nullptr;
    const double step = *static_cast<const float*>(meta.addr[4][slot]);
    co = adam_coeffs<T>(a.beta1, a.beta2, a.beta3, a.eps, a.weight_decay, a.bias_correction,
                        a.adam_w_mode, step);
    inv_divisor = static_cast<T>(1.0 / divisor_);
    one_minus_beta2 = T(1) - co.beta2;
    dir.init(co);
    lr = lr_;
  }

  __device__ bool aligned() const {
    return pack_aligned<kPack>(w) && pack_aligned<kPack>(g) && pack_aligned<kPack>(m) &&
           pack_aligned<kPack>(v) && (!kMaster || pack_aligned<kPack>(model));
  }

  template <int N, int U>
  __device__ __forceinline__ void run(int64_t k, int64_t stride) {
    T pw[U][N], pm[U][N], pv[U][N];
    G pg[U][N];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      load_n<N>(pw[u], w, k + u * stride);
      load_n<N>(pg[u], g, k + u * stride);
      load_n<N>(pm[u], m, k + u * stride);
      load_n<N>(pv[u], v, k + u * stride);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        T grad = static_cast<T>(pg[u][j]) * inv_divisor;
        if (!co.adam_w_mode) grad += co.weight_decay * pw[u][j];
        pm[u][j] = co.beta1 * pm[u][j] + co.beta3 * grad;
        pv[u][j] = co.beta2 * pv[u][j] + one_minus_beta2 * grad * grad;
        const T d = dir(pw[u][j], pm[u][j], pv[u][j]);
        if constexpr (kLamb) {
          pp += pw[u][j] * pw[u][j];
          uu += d * d;
        } else {
          pw[u][j] = pw[u][j] - lr * d;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      store_n<N>(m, k + u * stride, pm[u]);
      store_n<N>(v, k + u * stride, pv[u]);
      if constexpr (!kLamb) {
        store_n<N>(w, k + u * stride, pw[u]);
        if constexpr (kMaster) {
          G out[N];
#pragma unroll
          for (int j = 0; j < N; ++j) out[j] = static_cast<G>(pw[u][j]);
          store_n<N>(model, k + u * stride, out);
        }
      }
    }
  }
};

// Pass 1 of LAMB (kLamb) or the whole Adam step.
// With kSignal, the last block of a tensor leaves its counter at chunks + 1 once the tensor's
// squares are written (the interleaved schedule's pass-2 blocks wait for that); otherwise it
// resets the counter to 0.
template <typename T, typename G, bool kMaster, bool kLamb, bool kSignal = false>
struct MomentsChunk {
  static constexpr int kBlockSize = kBlock;
  __device__ void operator()(const Meta& meta, int slot, int chunk, int64_t chunk_size,
                             AdamArgs a, T* partial, int* counters, T* squares) const {
    const GradPrologue pro =
        grad_prologue(a.found_inf, a.grad_scale, a.grad_norm, a.max_grad_norm);
    if (pro.skip) return;
    const int64_t numel = meta.numel[slot];
    const int64_t begin = static_cast<int64_t>(chunk) * chunk_size;
    const int64_t len = min(chunk_size, numel - begin);
    ChunkBody<T, G, kMaster, kLamb> body(meta, slot, begin, a, pro.divisor,
                                         static_cast<T>(a.lr.get()));
    for_each_pack_group(len, body.aligned(), body);
    if constexpr (kLamb) {
      const T pp = block_sum(body.pp);
      const T uu = block_sum(body.uu);
      __shared__ bool last;
      const int64_t chunks = (numel + chunk_size - 1) / chunk_size;
      const int64_t first = meta.first_chunk[slot];
      const int index = meta.index[slot];
      if (threadIdx.x == 0) {
        partial[2 * (first + chunk)] = pp;
        partial[2 * (first + chunk) + 1] = uu;
        __threadfence();  // the sums are visible before the counter says so
        last = atomicAdd(&counters[index], 1) == chunks - 1;
      }
      __syncthreads();
      if (last) {
        T sp = 0, su = 0;
        for (int64_t c = threadIdx.x; c < chunks; c += kBlock) {
          sp += __ldcg(partial + 2 * (first + c));
          su += __ldcg(partial + 2 * (first + c) + 1);
        }
        sp = block_sum(sp);
        su = block_sum(su);
        if (threadIdx.x == 0) {
          squares[2 * index] = sp;
          squares[2 * index + 1] = su;
          if constexpr (kSignal) {
            __threadfence();  // the squares are visible before the counter says so
            atomicExch(&counters[index], static_cast<int>(chunks) + 1);
          } else {
            counters[index] = 0;
          }
        }
      }
    }
  }
};

// Pass 2 of LAMB.
template <typename T, typename G, bool kMaster>
struct TrustChunk {
  static constexpr int kBlockSize = kBlock;

  struct Body {
    T* w;
    const T* m;
    const T* v;
    G* model;
    Direction<T> dir;
    T scale;

    template <int N, int U>
    __device__ __forceinline__ void run(int64_t k, int64_t stride) {
      T pw[U][N], pm[U][N], pv[U][N];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        load_n<N>(pw[u], w, k + u * stride);
        load_n<N>(pm[u], m, k + u * stride);
        load_n<N>(pv[u], v, k + u * stride);
      }
  #pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int j = 0; j < N; ++j) pw[u][j] = pw[u][j] - scale * dir(pw[u][j], pm[u][j], pv[u][j]);
        store_n<N>(w, k + u * stride, pw[u]);
        if constexpr (kMaster) {
          G out[N];
#pragma unroll
          for (int j = 0; j < N; ++j) out[j] = static_cast<G>(pw[u][j]);
          store_n<N>(model, k + u * stride, out);
        }
      }
    }
  };

  __device__ void operator()(const Meta& meta, int, int, int64_t chunk_size, AdamArgs a,
                             const T* squares) const {
    const int b = gridDim.x - 1 - blockIdx.x;  // reverse order: see the top of the file
    apply<false>(meta, meta.block_slot[b], meta.block_chunk[b], chunk_size, a, squares, nullptr);
  }

  // kWait: thread 0 first waits until the tensor's counter reads chunks + 1 (MomentsChunk with
  // kSignal), and the squares are then read from L2, past any stale L1 line.
  template <bool kWait>
  __device__ void apply(const Meta& meta, int slot, int chunk, int64_t chunk_size,
                        const AdamArgs& a, const T* squares, const int* counters) const {
    const GradPrologue pro =
        grad_prologue(a.found_inf, a.grad_scale, a.grad_norm, a.max_grad_norm);
    if (pro.skip) return;
    const int64_t begin = static_cast<int64_t>(chunk) * chunk_size;
    const int64_t len = min(chunk_size, meta.numel[slot] - begin);
    const int index = meta.index[slot];
    if constexpr (kWait) {
      __shared__ T shared_squares[2];
      if (threadIdx.x == 0) {
        const int target = static_cast<int>((meta.numel[slot] + chunk_size - 1) / chunk_size) + 1;
        const volatile int* flag = counters + index;
        while (*flag != target) __nanosleep(128);
        __threadfence();
        shared_squares[0] = __ldcg(squares + 2 * index);
        shared_squares[1] = __ldcg(squares + 2 * index + 1);
      }
      __syncthreads();
      run_body(meta, slot, begin, len, a, shared_squares[0], shared_squares[1]);
    } else {
      run_body(meta, slot, begin, len, a, squares[2 * index], squares[2 * index + 1]);
    }
  }

  __device__ void run_body(const Meta& meta, int slot, int64_t begin, int64_t len,
                           const AdamArgs& a, T p_squares, T u_squares) const {
    Body body;
    body.w = static_cast<T*>(meta.addr[0][slot]) + begin;
    body.m = static_cast<const T*>(meta.addr[2][slot]) + begin;
    body.v = static_cast<const T*>(meta.addr[3][slot]) + begin;
    body.model = kMaster ? static_cast<G*>(meta.addr[5][slot]) + begin : nullptr;
    const double step = *static_cast<const float*>(meta.addr[4][slot]);
    body.dir.init(adam_coeffs<T>(a.beta1, a.beta2, a.beta3, a.eps, a.weight_decay,
                                 a.bias_correction, a.adam_w_mode, step));
    const T ratio = lamb_trust_ratio(p_squares, u_squares, a.adapt);
    body.scale = static_cast<T>(a.lr.get()) * ratio;
    const bool aligned = pack_aligned<kPack>(body.w) && pack_aligned<kPack>(body.m) &&
                         pack_aligned<kPack>(body.v) &&
                         (!kMaster || pack_aligned<kPack>(body.model));
    for_each_pack_group(len, aligned, body);
  }
};

// Both passes in one stream of launches: each block takes the next entry of the launch's
// schedule by ticket (an atomic counter, so entries start in schedule order whatever order the
// hardware starts blocks in). block_chunk[e] >= 0 is pass 1 of that chunk, ~c pass 2 of chunk
// c. The host puts every pass-2 entry of a tensor after all its pass-1 entries, so a waiting
// block only waits for blocks that hold earlier tickets and are running or done: no deadlock.
// Pass 2 of a tensor follows its pass 1 by a window of elements smaller than L2, so its reads of
// p, m and v mostly hit L2.
template <typename T, typename G, bool kMaster>
__global__ void __launch_bounds__(kBlock)
    lamb_interleaved_kernel(const __grid_constant__ Meta meta, int64_t chunk_size, AdamArgs a,
                            T* partial, int* counters, T* squares, int* ticket) {
  __shared__ int entry;
  if (threadIdx.x == 0) entry = atomicAdd(ticket, 1);
  __syncthreads();
  const int e = entry;
  const int slot = meta.block_slot[e];
  const int code = meta.block_chunk[e];
  if (code >= 0) {
    MomentsChunk<T, G, kMaster, true, true>{}(meta, slot, code, chunk_size, a, partial, counters,
                                              squares);
  } else {
    TrustChunk<T, G, kMaster>{}.template apply<true>(meta, slot, ~code, chunk_size, a, squares,
                                                     counters);
  }
}

// The interleaved schedule (see lamb_interleaved_kernel) over all tensors, cut into launches
// of at most kMaxBlocks entries and kMaxTensors tensors.
template <typename T, typename G, bool kMaster>
void lamb_interleaved(const std::array<at::TensorList, kDepth>& lists, const ChunkLayout& layout,
                      const AdamArgs& a, int64_t window_elems, T* partial, int* counters,
                      T* squares, const at::TensorOptions& opts) {
  const int64_t n = static_cast<int64_t>(lists[0].size());
  const int64_t lag = std::max<int64_t>(1, window_elems / layout.chunk_size);
  // (tensor, code) in schedule order
  std::vector<std::pair<int64_t, int32_t>> order;
  order.reserve(2 * layout.total_chunks());
  std::vector<std::pair<int64_t, int64_t>> ready;  // (tensor, pass-1 entries emitted at its end)
  size_t head = 0;
  int64_t next_p2 = 0;  // next pass-2 chunk of ready[head]
  int64_t emitted = 0;
  int64_t t = 0, c = 0;
  auto skip_empty = [&]() {
    while (t < n && layout.chunks(t) == 0) ++t;
  };
  skip_empty();
  while (t < n || head < ready.size()) {
    if (head < ready.size() && (t >= n || emitted - ready[head].second >= lag)) {
      const int64_t i = ready[head].first;
      order.emplace_back(i, ~static_cast<int32_t>(next_p2));
      if (++next_p2 == layout.chunks(i)) {
        ++head;
        next_p2 = 0;
      }
    } else {
      order.emplace_back(t, static_cast<int32_t>(c));
      ++emitted;
      if (++c == layout.chunks(t)) {
        ready.emplace_back(t, emitted);
        c = 0;
        ++t;
        skip_empty();
      }
    }
  }
  // cut into launches
  std::vector<std::pair<size_t, size_t>> launches;
  {
    size_t begin = 0;
    std::vector<int64_t> seen;
    for (size_t e = 0; e < order.size(); ++e) {
      const int64_t i = order[e].first;
      const bool known = std::find(seen.begin(), seen.end(), i) != seen.end();
      if (e - begin == static_cast<size_t>(Meta::kMaxBlocks) ||
          (!known && seen.size() == static_cast<size_t>(Meta::kMaxTensors))) {
        launches.emplace_back(begin, e);
        begin = e;
        seen.clear();
      }
      if (std::find(seen.begin(), seen.end(), i) == seen.end()) seen.push_back(i);
    }
    if (begin < order.size()) launches.emplace_back(begin, order.size());
  }
  at::Tensor tickets = at::zeros({static_cast<int64_t>(launches.size())}, opts.dtype(at::kInt));
  int* ticket = tickets.data_ptr<int>();
  const c10::cuda::CUDAGuard guard(lists[0][0].device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (size_t l = 0; l < launches.size(); ++l) {
    Meta meta;
    std::vector<int64_t> slots;
    for (size_t e = launches[l].first; e < launches[l].second; ++e) {
      const int64_t i = order[e].first;
      auto it = std::find(slots.begin(), slots.end(), i);
      int slot = static_cast<int>(it - slots.begin());
      if (it == slots.end()) {
        slots.push_back(i);
        for (int d = 0; d < kDepth; ++d) meta.addr[d][slot] = lists[d][i].data_ptr();
        meta.numel[slot] = lists[0][i].numel();
        meta.index[slot] = static_cast<int32_t>(i);
        meta.first_chunk[slot] = layout.first[i];
      }
      meta.block_slot[e - launches[l].first] = static_cast<uint8_t>(slot);
      meta.block_chunk[e - launches[l].first] = order[e].second;
    }
    const int blocks = static_cast<int>(launches[l].second - launches[l].first);
    lamb_interleaved_kernel<T, G, kMaster><<<blocks, kBlock, 0, stream>>>(
        meta, layout.chunk_size, a, partial, counters, squares, ticket + l);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// Batches of consecutive positions of at most batch_elems elements (a tensor larger than that
// is a batch of its own); one batch of everything when batch_elems <= 0.
std::vector<std::vector<int64_t>> batches_of(at::TensorList params, int64_t batch_elems) {
  std::vector<std::vector<int64_t>> out(1);
  int64_t filled = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t n = params[i].numel();
    if (batch_elems > 0 && filled > 0 && filled + n > batch_elems) {
      out.emplace_back();
      filled = 0;
    }
    out.back().push_back(static_cast<int64_t>(i));
    filled += n;
  }
  return out;
}

template <typename T, typename G, bool kMaster>
void adam_family_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, at::TensorList master_params,
                      at::TensorList steps, const AdamArgs& a, bool lamb, int64_t batch_elems) {
  const std::array<at::TensorList, kDepth> lists{
      kMaster ? master_params : params, grads, exp_avgs, exp_avg_sqs, steps, params};
  const ChunkLayout layout(params, lamb && batch_elems < 0 ? kOptimChunk : kCudaChunk);
  const auto opts = exp_avgs[0].options();
  const int64_t n = static_cast<int64_t>(params.size());
  if (!lamb) {
    std::vector<int64_t> all(n);
    for (int64_t i = 0; i < n; ++i) all[i] = i;
    multi_tensor_apply<kDepth>(lists, all, layout, MomentsChunk<T, G, kMaster, false>{}, a,
                               static_cast<T*>(nullptr), static_cast<int*>(nullptr),
                               static_cast<T*>(nullptr));
    return;
  }
  at::Tensor partial = at::empty({2 * layout.total_chunks()}, opts);
  at::Tensor squares = at::empty({2 * n}, opts);
  at::Tensor counters = at::zeros({n}, opts.dtype(at::kInt));
  if (batch_elems < 0) {
    lamb_interleaved<T, G, kMaster>(lists, layout, a, -batch_elems, partial.data_ptr<T>(),
                                    counters.data_ptr<int>(), squares.data_ptr<T>(), opts);
    return;
  }
  for (const auto& batch : batches_of(params, batch_elems)) {
    multi_tensor_apply<kDepth>(lists, batch, layout, MomentsChunk<T, G, kMaster, true>{}, a,
                               partial.data_ptr<T>(), counters.data_ptr<int>(),
                               squares.data_ptr<T>());
    multi_tensor_apply<kDepth>(lists, batch, layout, TrustChunk<T, G, kMaster>{}, a,
                               static_cast<const T*>(squares.data_ptr<T>()));
  }
}

void adam_family_cuda_dispatch(at::TensorList params, at::TensorList grads,
                               at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                               at::TensorList master_params, at::TensorList steps,
                               const AdamArgs& a, bool lamb, int64_t batch_elems) {
  if (params.empty()) return;
  for (size_t i = 1; i < params.size(); ++i)
    MF_CHECK_TYPE(params[i].scalar_type() == params[0].scalar_type(), "params", "element ", i,
                  " has dtype ", params[i].scalar_type(), " but element 0 has ",
                  params[0].scalar_type(), "; one call takes one dtype");
  if (master_params.empty()) {
    AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "adam_family_cuda", [&] {
      adam_family_cuda<scalar_t, scalar_t, false>(params, grads, exp_avgs, exp_avg_sqs,
                                                  master_params, steps, a, lamb, batch_elems);
    });
  } else {
    AT_DISPATCH_REDUCED_FLOATING_TYPES(params[0].scalar_type(), "adam_family_cuda", [&] {
      adam_family_cuda<float, scalar_t, true>(params, grads, exp_avgs, exp_avg_sqs,
                                              master_params, steps, a, lamb, batch_elems);
    });
  }
}

}  // namespace

void lamb_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList master_params,
                    at::TensorList steps, const std::optional<at::Tensor>& lr_t, double lr,
                    double beta1, double beta2, double eps, double weight_decay,
                    bool bias_correction, bool adam_w_mode, bool grad_averaging, bool use_nvlamb,
                    const std::optional<at::Tensor>& grad_norm, double max_grad_norm,
                    const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf, int64_t batch_elems) {
  check_optim_lists(params, grads, {{exp_avgs, "exp_avgs"}, {exp_avg_sqs, "exp_avg_sqs"}},
                    master_params);
  check_steps(params, steps);
  AdamArgs a = make_adam_args(params, lr_t, lr, beta1, beta2, grad_averaging ? 1 - beta1 : 1.0,
                              eps, weight_decay, bias_correction, adam_w_mode, grad_norm,
                              max_grad_norm, grad_scale, found_inf);
  a.adapt = use_nvlamb || weight_decay != 0;
  adam_family_cuda_dispatch(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, a, true,
                            batch_elems);
}

void adam_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList master_params,
                    at::TensorList steps, const std::optional<at::Tensor>& lr_t, double lr,
                    double beta1, double beta2, double eps, double weight_decay,
                    bool bias_correction, bool adam_w_mode,
                    const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  check_optim_lists(params, grads, {{exp_avgs, "exp_avgs"}, {exp_avg_sqs, "exp_avg_sqs"}},
                    master_params);
  check_steps(params, steps);
  const AdamArgs a = make_adam_args(params, lr_t, lr, beta1, beta2, 1 - beta1, eps, weight_decay,
                                    bias_correction, adam_w_mode, std::nullopt, 0, grad_scale,
                                    found_inf);
  adam_family_cuda_dispatch(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, a, false,
                            0);
}

TORCH_LIBRARY_IMPL(mlperf_fast, CUDA, m) {
  m.impl("lamb_step", &lamb_step_cuda);
  m.impl("adam_step", &adam_step_cuda);
}

}  // namespace mlperf_fast
