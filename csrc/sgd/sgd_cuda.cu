// SGD and LARS steps on the GPU: one pass, one block per chunk, reading p, g and the momentum
// buffer and writing p and the buffer (and the low-precision params under master weights).
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <torch/library.h>

#include <array>
#include <vector>

#include "common/multi_tensor_apply.cuh"
#include "common/optim_cuda.cuh"
#include "sgd/sgd.h"

namespace mlperf_fast {

namespace {

constexpr int kBlock = 256;
// Lists: math weights (master or params), grads, momentum buffers, low-precision params.
constexpr int kDepth = 4;
using Meta = TensorListMeta<kDepth>;

template <typename T, typename G, bool kMaster, bool kLars>
struct SgdChunk {
  static constexpr int kBlockSize = kBlock;

  struct Body {
    T* w;
    const G* g;
    T* buf;
    G* model;
    SgdCoeffs<T> co;
    T divisor, lr, scaled_lr;

    template <int N, int U>
    __device__ __forceinline__ void run(int64_t k, int64_t stride) {
      T pw[U][N], pb[U][N];
      G pg[U][N];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        load_n<N>(pw[u], w, k + u * stride);
        load_n<N>(pg[u], g, k + u * stride);
        if (co.has_momentum && (kLars || !co.first_run)) load_n<N>(pb[u], buf, k + u * stride);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const T grad = static_cast<T>(pg[u][j]) / divisor;
          if constexpr (kLars) {
            pb[u][j] = co.momentum * pb[u][j] + scaled_lr * (grad + co.weight_decay * pw[u][j]);
            pw[u][j] = pw[u][j] - pb[u][j];
          } else {
            pw[u][j] = pw[u][j] - lr * sgd_direction(pw[u][j], grad, pb[u][j], co);
          }
        }
        if (co.has_momentum) store_n<N>(buf, k + u * stride, pb[u]);
        store_weights<kMaster>(w, model, k + u * stride, pw[u]);
      }
    }
  };

  __device__ void operator()(const Meta& meta, int slot, int chunk, int64_t chunk_size,
                             SgdArgs a) const {
    const GradPrologue pro = grad_prologue(a.found_inf, a.grad_scale, ScalarArg{}, 0);
    if (pro.skip) return;
    const int64_t begin = static_cast<int64_t>(chunk) * chunk_size;
    const int64_t len = min(chunk_size, meta.numel[slot] - begin);
    Body body;
    body.w = static_cast<T*>(meta.addr[0][slot]) + begin;
    body.g = static_cast<const G*>(meta.addr[1][slot]) + begin;
    body.buf = a.has_momentum ? static_cast<T*>(meta.addr[2][slot]) + begin : nullptr;
    body.model = kMaster ? static_cast<G*>(meta.addr[3][slot]) + begin : nullptr;
    body.co = SgdCoeffs<T>{static_cast<T>(a.momentum), static_cast<T>(a.dampening),
                           static_cast<T>(a.weight_decay), a.nesterov, a.first_run,
                           a.has_momentum};
    body.divisor = static_cast<T>(pro.divisor);
    body.lr = static_cast<T>(a.lr.get());
    body.scaled_lr = body.lr;
    if constexpr (kLars) {
      const int index = meta.index[slot];
      const T pn = read_norm<T>(a.param_norms, a.norms_double, index);
      const T gn = read_norm<T>(a.grad_norms, a.norms_double, index) / body.divisor;
      body.scaled_lr = body.lr * lars_trust_ratio(pn, gn, static_cast<T>(a.trust_coefficient),
                                                  body.co.weight_decay, static_cast<T>(a.eps),
                                                  a.adapt);
    }
    const bool aligned = pack_aligned<kPack>(body.w) && pack_aligned<kPack>(body.g) &&
                         (!a.has_momentum || pack_aligned<kPack>(body.buf)) &&
                         (!kMaster || pack_aligned<kPack>(body.model));
    for_each_pack_group<kBlock>(len, aligned, body);
  }
};

template <typename T, typename G, bool kMaster>
void sgd_family_cuda(at::TensorList params, at::TensorList grads, at::TensorList bufs,
                     at::TensorList master_params, const SgdArgs& a) {
  // Without momentum the buffer list is never read; the params stand in for it.
  const std::array<at::TensorList, kDepth> lists{kMaster ? master_params : params, grads,
                                                 a.has_momentum ? bufs : params, params};
  const ChunkLayout layout(params, kOptimChunk);
  // LARS follows the norms' pass over the weights and gradients: backwards, it starts with
  // what that pass read last.
  if (a.lars)
    multi_tensor_apply_reversed<kDepth>(lists, all_positions(params), layout,
                                        SgdChunk<T, G, kMaster, true>{}, a);
  else
    multi_tensor_apply<kDepth>(lists, all_positions(params), layout,
                               SgdChunk<T, G, kMaster, false>{}, a);
}

void sgd_family_cuda_dispatch(at::TensorList params, at::TensorList grads, at::TensorList bufs,
                              at::TensorList master_params, const SgdArgs& a) {
  if (params.empty()) return;
  if (master_params.empty()) {
    AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "sgd_family_cuda", [&] {
      sgd_family_cuda<scalar_t, scalar_t, false>(params, grads, bufs, master_params, a);
    });
  } else {
    AT_DISPATCH_REDUCED_FLOATING_TYPES(params[0].scalar_type(), "sgd_family_cuda", [&] {
      sgd_family_cuda<float, scalar_t, true>(params, grads, bufs, master_params, a);
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(mlperf_fast, CUDA, m) {
  m.impl("sgd_step", &sgd_step<sgd_family_cuda_dispatch>);
  m.impl("lars_step", &lars_step<sgd_family_cuda_dispatch>);
}

}  // namespace mlperf_fast
