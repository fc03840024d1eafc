// LAMB and Adam / AdamW steps on the CPU: the same passes as the CUDA kernels, with the chunks of
// every tensor spread over at::parallel_for's threads.
#include "lamb/lamb.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common/multi_tensor.h"

namespace mlperf_fast {

namespace {

// The pointers of parameter i. w is what the math updates: the master weight, or the parameter
// itself; model is the low-precision parameter that receives the rounded master (or null).
template <typename T, typename G>
struct CpuSlot {
  T* w;
  const G* g;
  T* m;
  T* v;
  G* model;
  double step;
};

template <typename T, typename G>
std::vector<CpuSlot<T, G>> cpu_slots(at::TensorList params, at::TensorList grads,
                                     at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                                     at::TensorList master_params, at::TensorList steps) {
  const bool master = !master_params.empty();
  std::vector<CpuSlot<T, G>> slots(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    auto& s = slots[i];
    s.w = master ? master_params[i].data_ptr<T>() : static_cast<T*>(params[i].data_ptr());
    s.g = static_cast<const G*>(grads[i].const_data_ptr());
    s.m = exp_avgs[i].data_ptr<T>();
    s.v = exp_avg_sqs[i].data_ptr<T>();
    s.model = master ? static_cast<G*>(params[i].data_ptr()) : nullptr;
    s.step = steps[i].item<double>();
  }
  return slots;
}

template <typename T>
AdamCoeffs<T> coeffs_for(const AdamArgs& a, double step) {
  return adam_coeffs<T>(a.beta1, a.beta2, a.beta3, a.eps, a.weight_decay, a.bias_correction,
                        a.adam_w_mode, step);
}

// LAMB when `lamb`, else Adam: pass 1 updates the moments (and for Adam the parameters); for
// LAMB it leaves per-chunk sums of p^2 and update^2, which are summed per tensor in chunk order,
// and pass 2 applies lr * trust ratio * update.
template <typename T, typename G>
void adam_family_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList exp_avg_sqs, at::TensorList master_params,
                     at::TensorList steps, const AdamArgs& a, bool lamb) {
  const GradPrologue pro =
      grad_prologue(a.found_inf, a.grad_scale, a.grad_norm, a.max_grad_norm);
  if (pro.skip) return;
  const T divisor = static_cast<T>(pro.divisor);
  const T lr = static_cast<T>(a.lr.get());
  const auto slots = cpu_slots<T, G>(params, grads, exp_avgs, exp_avg_sqs, master_params, steps);
  const ChunkLayout layout(params, kOptimChunk);
  auto numel_of = [&](size_t i) { return params[i].numel(); };
  std::vector<double> partial(lamb ? 2 * layout.total_chunks() : 0);

  for_each_chunk_cpu(layout, numel_of, [&](size_t i, int64_t c, int64_t begin, int64_t end) {
    const auto& s = slots[i];
    const AdamCoeffs<T> co = coeffs_for<T>(a, s.step);
    double pp = 0, uu = 0;
    for (int64_t k = begin; k < end; ++k) {
      const T p = s.w[k];
      const T g = static_cast<T>(s.g[k]) / divisor;
      T m = s.m[k], v = s.v[k];
      const T u = adam_moments(p, g, m, v, co);
      s.m[k] = m;
      s.v[k] = v;
      if (lamb) {
        pp += static_cast<double>(p) * p;
        uu += static_cast<double>(u) * u;
      } else {
        const T q = p - lr * u;
        s.w[k] = q;
        if (s.model) s.model[k] = static_cast<G>(q);
      }
    }
    if (lamb) {
      partial[2 * (layout.first[i] + c)] = pp;
      partial[2 * (layout.first[i] + c) + 1] = uu;
    }
  });
  if (!lamb) return;

  const size_t n = params.size();
  std::vector<T> ratio(n, T(1));
  for (size_t i = 0; i < n; ++i) {
    double pp = 0, uu = 0;
    for (int64_t g = layout.first[i]; g < layout.first[i + 1]; ++g) {
      pp += partial[2 * g];
      uu += partial[2 * g + 1];
    }
    ratio[i] = lamb_trust_ratio(static_cast<T>(pp), static_cast<T>(uu), a.adapt);
  }
  for_each_chunk_cpu(layout, numel_of, [&](size_t i, int64_t, int64_t begin, int64_t end) {
    const auto& s = slots[i];
    const AdamCoeffs<T> co = coeffs_for<T>(a, s.step);
    const T scale = lr * ratio[i];
    for (int64_t k = begin; k < end; ++k) {
      const T p = s.w[k];
      const T q = p - scale * adam_direction(p, s.m[k], s.v[k], co);
      s.w[k] = q;
      if (s.model) s.model[k] = static_cast<G>(q);
    }
  });
}

void adam_family_dispatch(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                          at::TensorList exp_avg_sqs, at::TensorList master_params,
                          at::TensorList steps, const AdamArgs& a, bool lamb,
                          int64_t /*batch_elems*/) {
  if (params.empty()) return;
  if (master_params.empty()) {
    AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "adam_family_cpu", [&] {
      adam_family_cpu<scalar_t, scalar_t>(params, grads, exp_avgs, exp_avg_sqs, master_params,
                                          steps, a, lamb);
    });
  } else {
    AT_DISPATCH_REDUCED_FLOATING_TYPES(params[0].scalar_type(), "adam_family_cpu", [&] {
      adam_family_cpu<float, scalar_t>(params, grads, exp_avgs, exp_avg_sqs, master_params,
                                       steps, a, lamb);
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(mlperf_fast, CPU, m) {
  m.impl("lamb_step", &lamb_step<adam_family_dispatch>);
  m.impl("adam_step", &adam_step<adam_family_dispatch>);
}

}  // namespace mlperf_fast
