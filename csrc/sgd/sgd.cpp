// SGD and LARS steps on the CPU.
#include "sgd/sgd.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

#include "common/multi_tensor.h"

namespace mlperf_fast {

SgdArgs make_sgd_args(at::TensorList params, at::TensorList momentum_buffers,
                      const std::optional<at::Tensor>& lr_t, double lr,
                      const std::optional<at::Tensor>& grad_scale,
                      const std::optional<at::Tensor>& found_inf) {
  const at::Device device = params.empty() ? at::Device(at::kCPU) : params[0].device();
  SgdArgs a;
  a.lr = scalar_arg(lr_t, lr, "lr", device);
  a.grad_scale = scalar_arg(grad_scale, 1, "grad_scale", device);
  a.found_inf = scalar_arg(found_inf, 0, "found_inf", device);
  a.has_momentum = !momentum_buffers.empty();
  for (size_t i = 1; i < params.size(); ++i)
    MF_CHECK_TYPE(params[i].scalar_type() == params[0].scalar_type(), "params", "element ", i,
                  " has dtype ", params[i].scalar_type(), " but element 0 has ",
                  params[0].scalar_type(), "; one call takes one dtype");
  return a;
}

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

void sgd_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                  at::TensorList master_params, const std::optional<at::Tensor>& lr_t,
                  double lr, double momentum, double dampening, double weight_decay,
                  bool nesterov, bool first_run, const std::optional<at::Tensor>& grad_scale,
                  const std::optional<at::Tensor>& found_inf) {
  if (momentum_buffers.empty())
    check_optim_lists(params, grads, {}, master_params);
  else
    check_optim_lists(params, grads, {{momentum_buffers, "momentum_buffers"}}, master_params);
  SgdArgs a = make_sgd_args(params, momentum_buffers, lr_t, lr, grad_scale, found_inf);
  a.momentum = momentum;
  a.dampening = dampening;
  a.weight_decay = weight_decay;
  a.nesterov = nesterov;
  a.first_run = first_run;
  sgd_family_dispatch(params, grads, momentum_buffers, master_params, a);
}

void lars_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                   at::TensorList master_params, const at::Tensor& param_norms,
                   const at::Tensor& grad_norms, const std::optional<at::Tensor>& lr_t,
                   double lr, double momentum, double weight_decay, double trust_coefficient,
                   double eps, bool adapt, const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf) {
  check_optim_lists(params, grads, {{momentum_buffers, "momentum_buffers"}}, master_params);
  check_lars_norms(params, param_norms, grad_norms);
  SgdArgs a = make_sgd_args(params, momentum_buffers, lr_t, lr, grad_scale, found_inf);
  MF_CHECK_VALUE(a.has_momentum || params.empty(), "momentum_buffers",
                 "LARS needs a momentum buffer per parameter");
  a.lars = true;
  a.momentum = momentum;
  a.weight_decay = weight_decay;
  a.trust_coefficient = trust_coefficient;
  a.eps = eps;
  a.adapt = adapt;
  a.param_norms = param_norms.const_data_ptr();
  a.grad_norms = grad_norms.const_data_ptr();
  a.norms_double = param_norms.scalar_type() == at::kDouble;
  sgd_family_dispatch(params, grads, momentum_buffers, master_params, a);
}

TORCH_LIBRARY_IMPL(mlperf_fast, CPU, m) {
  m.impl("sgd_step", &sgd_step_cpu);
  m.impl("lars_step", &lars_step_cpu);
}

}  // namespace mlperf_fast
