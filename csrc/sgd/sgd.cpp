// SGD and LARS steps on the CPU.
#include "sgd/sgd.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

#include "common/multi_tensor.h"

namespace mlperf_fast {

void check_lars_norms(at::TensorList params, const at::Tensor& param_norms,
                      const at::Tensor& grad_norms) {
  const int64_t n = static_cast<int64_t>(params.size());
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{param_norms, "param_norms"},
                                {grad_norms, "grad_norms"}}) {
    MF_CHECK_VALUE(t.dim() == 1 && t.numel() == n, name, "must have shape (", n, "), got ",
                   t.sizes());
    MF_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                  "must be float32 or float64, got ", t.scalar_type());
    MF_CHECK_VALUE(t.is_contiguous(), name, "must be contiguous");
    if (n > 0)
      MF_CHECK_VALUE(t.device() == params[0].device(), name, "is on ", t.device(),
                     " but the params are on ", params[0].device());
  }
  MF_CHECK_TYPE(param_norms.scalar_type() == grad_norms.scalar_type(), "grad_norms",
                "has dtype ", grad_norms.scalar_type(), " but 'param_norms' has ",
                param_norms.scalar_type());
}

namespace {

template <typename T, typename G>
void sgd_family_cpu(at::TensorList params, at::TensorList grads, at::TensorList bufs,
                    at::TensorList master_params, const SgdArgs& a) {
  const GradPrologue pro = grad_prologue(a.found_inf, a.grad_scale, ScalarArg{}, 0);
  if (pro.skip) return;
  const T divisor = static_cast<T>(pro.divisor);
  const T lr = static_cast<T>(a.lr.get());
  const bool master = !master_params.empty();
  const SgdCoeffs<T> co{static_cast<T>(a.momentum), static_cast<T>(a.dampening),
                        static_cast<T>(a.weight_decay), a.nesterov, a.first_run,
                        a.has_momentum};
  const ChunkLayout layout(params, kOptimChunk);
  for_each_chunk_cpu(
      layout, [&](size_t i) { return params[i].numel(); },
      [&](size_t i, int64_t, int64_t begin, int64_t end) {
        T* w = master ? master_params[i].data_ptr<T>() : static_cast<T*>(params[i].data_ptr());
        const G* g = static_cast<const G*>(grads[i].const_data_ptr());
        T* buf = a.has_momentum ? bufs[i].data_ptr<T>() : nullptr;
        G* model = master ? static_cast<G*>(params[i].data_ptr()) : nullptr;
        T trust = T(1);
        if (a.lars) {
          const T pn = read_norm<T>(a.param_norms, a.norms_double, i);
          const T gn = read_norm<T>(a.grad_norms, a.norms_double, i) / divisor;
          trust = lars_trust_ratio(pn, gn, static_cast<T>(a.trust_coefficient), co.weight_decay,
                                   static_cast<T>(a.eps), a.adapt);
        }
        const T scaled_lr = lr * trust;
        for (int64_t k = begin; k < end; ++k) {
          const T p = w[k];
          const T grad = static_cast<T>(g[k]) / divisor;
          T q;
          if (a.lars) {
            const T b = co.momentum * buf[k] + scaled_lr * (grad + co.weight_decay * p);
            buf[k] = b;
            q = p - b;
          } else {
            T b = a.has_momentum ? buf[k] : T(0);
            const T d = sgd_direction(p, grad, b, co);
            if (a.has_momentum) buf[k] = b;
            q = p - lr * d;
          }
          w[k] = q;
          if (model) model[k] = static_cast<G>(q);
        }
      });
}

void sgd_family_dispatch(at::TensorList params, at::TensorList grads, at::TensorList bufs,
                         at::TensorList master_params, const SgdArgs& a) {
  if (params.empty()) return;
  if (master_params.empty()) {
    AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "sgd_family_cpu", [&] {
      sgd_family_cpu<scalar_t, scalar_t>(params, grads, bufs, master_params, a);
    });
  } else {
    AT_DISPATCH_REDUCED_FLOATING_TYPES(params[0].scalar_type(), "sgd_family_cpu", [&] {
      sgd_family_cpu<float, scalar_t>(params, grads, bufs, master_params, a);
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(mlperf_fast, CPU, m) {
  m.impl("sgd_step", &sgd_step<sgd_family_dispatch>);
  m.impl("lars_step", &lars_step<sgd_family_dispatch>);
}

}  // namespace mlperf_fast
