#pragma once
// SGD with momentum (torch.optim.SGD's semantics) and LARS (the MLPerf ResNet-50 form) over lists
// of tensors, one pass each. LARS's per-tensor norms come from multi_tensor_l2norm beforehand.
//
// Lists as in csrc/common/optim_args.h, with momentum_buffers as the state list (empty for SGD
// without momentum). param_norms: ||w|| of each math weight; grad_norms: ||g|| of each grad as
// given (before division by grad_scale); float32 or float64 tensors of length n.
#include <ATen/core/Tensor.h>

#include <optional>

#include "common/optim_args.h"

namespace mlperf_fast {

struct SgdArgs {
  ScalarArg lr, grad_scale, found_inf;
  double momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, first_run = false, has_momentum = false;
  // LARS only
  bool lars = false, adapt = true;
  double trust_coefficient = 0, eps = 0;
  const void* param_norms = nullptr;
  const void* grad_norms = nullptr;
  bool norms_double = false;
};

template <typename T>
MF_HD T read_norm(const void* p, bool is_double, int64_t i) {
  return is_double ? static_cast<T>(static_cast<const double*>(p)[i])
                   : static_cast<T>(static_cast<const float*>(p)[i]);
}

void check_lars_norms(at::TensorList params, const at::Tensor& param_norms,
                      const at::Tensor& grad_norms);

// The kernels of one backend (sgd.cpp: CPU, sgd_cuda.cu: CUDA) over checked lists: SGD, or
// LARS when a.lars.
using SgdFamilyKernels = void (*)(at::TensorList params, at::TensorList grads,
                                  at::TensorList momentum_buffers, at::TensorList master_params,
                                  const SgdArgs& a);

// The ops mlperf_fast::sgd_step and lars_step (schemas in csrc/registration.cpp), written once:
// each backend registers them over its kernels. first_run sets the buffers to the first
// direction (torch.optim.SGD's first step) instead of reading them.
template <SgdFamilyKernels kKernels>
void sgd_step(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
              at::TensorList master_params, const std::optional<at::Tensor>& lr_t, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov,
              bool first_run, const std::optional<at::Tensor>& grad_scale,
              const std::optional<at::Tensor>& found_inf) {
  if (momentum_buffers.empty())
    check_optim_lists(params, grads, {}, master_params);
  else
    check_optim_lists(params, grads, {{momentum_buffers, "momentum_buffers"}}, master_params);
  SgdArgs a{.momentum = momentum, .dampening = dampening, .weight_decay = weight_decay,
            .nesterov = nesterov, .first_run = first_run,
            .has_momentum = !momentum_buffers.empty()};
  set_step_scalars(a, params, lr_t, lr, grad_scale, found_inf);
  kKernels(params, grads, momentum_buffers, master_params, a);
}

template <SgdFamilyKernels kKernels>
void lars_step(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
               at::TensorList master_params, const at::Tensor& param_norms,
               const at::Tensor& grad_norms, const std::optional<at::Tensor>& lr_t, double lr,
               double momentum, double weight_decay, double trust_coefficient, double eps,
               bool adapt, const std::optional<at::Tensor>& grad_scale,
               const std::optional<at::Tensor>& found_inf) {
  check_optim_lists(params, grads, {{momentum_buffers, "momentum_buffers"}}, master_params);
  check_lars_norms(params, param_norms, grad_norms);
  MF_CHECK_VALUE(!momentum_buffers.empty() || params.empty(), "momentum_buffers",
                 "LARS needs a momentum buffer per parameter");
  SgdArgs a{.momentum = momentum, .weight_decay = weight_decay,
            .has_momentum = !momentum_buffers.empty(), .lars = true, .adapt = adapt,
            .trust_coefficient = trust_coefficient, .eps = eps,
            .param_norms = param_norms.const_data_ptr(),
            .grad_norms = grad_norms.const_data_ptr(),
            .norms_double = param_norms.scalar_type() == at::kDouble};
  set_step_scalars(a, params, lr_t, lr, grad_scale, found_inf);
  kKernels(params, grads, momentum_buffers, master_params, a);
}

}  // namespace mlperf_fast
