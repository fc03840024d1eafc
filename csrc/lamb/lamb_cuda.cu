// LAMB and Adam / AdamW steps on the GPU.
//
// LAMB, per batch of tensors (all of them unless batch_elems > 0):
//   pass 1  one block per chunk: reads p, g, m, v; writes m, v; leaves the chunk's sums of p^2
//           and update^2; the last block of each tensor to finish (an integer counter) sums its
//           tensor's chunk sums in chunk order, so the per-tensor norms come out of the same
//           launch, deterministically, with no floating-point atomics.
//   pass 2  one block per chunk, from the last chunk back to the first: reads p, m, v,
//           recomputes the update (the same expression as pass 1), writes
//           p - lr * trust_ratio * update. Walking the chunks backwards starts with the data
//           pass 1 touched last, which is still in L2; with batches smaller than L2 most of
//           pass 2 reads L2 rather than HBM.
// Adam / AdamW: pass 1 alone, applying the update directly.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <torch/library.h>

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
// launch (up to 128 tensors and 4096 chunks: 128Mi elements) covers BERT-large's 396 tensors
// in four launches a pass.
constexpr int64_t kCudaChunk = 32768;
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
        store_weights<kMaster>(w, model, k + u * stride, pw[u]);
      }
    }
  }
};

// Pass 1 of LAMB (kLamb) or the whole Adam step.
template <typename T, typename G, bool kMaster, bool kLamb>
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
    for_each_pack_group<kBlock>(len, body.aligned(), body);
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
          counters[index] = 0;
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
        store_weights<kMaster>(w, model, k + u * stride, pw[u]);
      }
    }
  };

  __device__ void operator()(const Meta& meta, int slot, int chunk, int64_t chunk_size,
                             AdamArgs a, const T* squares) const {
    const GradPrologue pro =
        grad_prologue(a.found_inf, a.grad_scale, a.grad_norm, a.max_grad_norm);
    if (pro.skip) return;
    const int64_t begin = static_cast<int64_t>(chunk) * chunk_size;
    const int64_t len = min(chunk_size, meta.numel[slot] - begin);
    const int index = meta.index[slot];
    Body body;
    body.w = static_cast<T*>(meta.addr[0][slot]) + begin;
    body.m = static_cast<const T*>(meta.addr[2][slot]) + begin;
    body.v = static_cast<const T*>(meta.addr[3][slot]) + begin;
    body.model = kMaster ? static_cast<G*>(meta.addr[5][slot]) + begin : nullptr;
    const double step = *static_cast<const float*>(meta.addr[4][slot]);
    body.dir.init(adam_coeffs<T>(a.beta1, a.beta2, a.beta3, a.eps, a.weight_decay,
                                 a.bias_correction, a.adam_w_mode, step));
    const T ratio = lamb_trust_ratio(squares[2 * index], squares[2 * index + 1], a.adapt);
    body.scale = static_cast<T>(a.lr.get()) * ratio;
    const bool aligned = pack_aligned<kPack>(body.w) && pack_aligned<kPack>(body.m) &&
                         pack_aligned<kPack>(body.v) &&
                         (!kMaster || pack_aligned<kPack>(body.model));
    for_each_pack_group<kBlock>(len, aligned, body);
  }
};

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
  const ChunkLayout layout(params, kCudaChunk);
  const auto opts = exp_avgs[0].options();
  const int64_t n = static_cast<int64_t>(params.size());
  if (!lamb) {
    multi_tensor_apply<kDepth>(lists, all_positions(params), layout,
                               MomentsChunk<T, G, kMaster, false>{}, a, static_cast<T*>(nullptr),
                               static_cast<int*>(nullptr), static_cast<T*>(nullptr));
    return;
  }
  at::Tensor partial = at::empty({2 * layout.total_chunks()}, opts);
  at::Tensor squares = at::empty({2 * n}, opts);
  at::Tensor counters = at::zeros({n}, opts.dtype(at::kInt));
  for (const auto& batch : batches_of(params, batch_elems)) {
    multi_tensor_apply<kDepth>(lists, batch, layout, MomentsChunk<T, G, kMaster, true>{}, a,
                               partial.data_ptr<T>(), counters.data_ptr<int>(),
                               squares.data_ptr<T>());
    multi_tensor_apply_reversed<kDepth>(lists, batch, layout, TrustChunk<T, G, kMaster>{}, a,
                               static_cast<const T*>(squares.data_ptr<T>()));
  }
}

void adam_family_cuda_dispatch(at::TensorList params, at::TensorList grads,
                               at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                               at::TensorList master_params, at::TensorList steps,
                               const AdamArgs& a, bool lamb, int64_t batch_elems) {
  if (params.empty()) return;
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

TORCH_LIBRARY_IMPL(mlperf_fast, CUDA, m) {
  m.impl("lamb_step", &lamb_step<adam_family_cuda_dispatch>);
  m.impl("adam_step", &adam_step<adam_family_cuda_dispatch>);
}

}  // namespace mlperf_fast
