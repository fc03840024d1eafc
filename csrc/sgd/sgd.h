#pragma once
// SGD with momentum (torch.optim.SGD's semantics) and LARS (the MLPerf ResNet-50 form) over lists
// of tensors, one pass each. LARS's per-tensor norms come from multi_tensor_l2norm beforehand.
//
// Lists as in csrc/lamb/lamb.h: params (float32 / float64, or float16 / bfloat16 with float32
// master_params), grads of the params' dtype, momentum_buffers of the math dtype (empty for SGD
// without momentum). param_norms: ||w|| of each math weight; grad_norms: ||g|| of each grad as
// given (before division by grad_scale); float32 or float64 tensors of length n.
#include <ATen/core/Tensor.h>

#include <optional>

#include "lamb/lamb.h"

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

SgdArgs make_sgd_args(at::TensorList params, at::TensorList momentum_buffers,
                      const std::optional<at::Tensor>& lr_t, double lr,
                      const std::optional<at::Tensor>& grad_scale,
                      const std::optional<at::Tensor>& found_inf);
void check_lars_norms(at::TensorList params, const at::Tensor& param_norms,
                      const at::Tensor& grad_norms);

void sgd_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                  at::TensorList master_params, const std::optional<at::Tensor>& lr_t,
                  double lr, double momentum, double dampening, double weight_decay,
                  bool nesterov, bool first_run, const std::optional<at::Tensor>& grad_scale,
                  const std::optional<at::Tensor>& found_inf);
void sgd_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                   at::TensorList master_params, const std::optional<at::Tensor>& lr_t,
                   double lr, double momentum, double dampening, double weight_decay,
                   bool nesterov, bool first_run, const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf);
void lars_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                   at::TensorList master_params, const at::Tensor& param_norms,
                   const at::Tensor& grad_norms, const std::optional<at::Tensor>& lr_t,
                   double lr, double momentum, double weight_decay, double trust_coefficient,
                   double eps, bool adapt, const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf);
void lars_step_cuda(at::TensorList params, at::TensorList grads,
                    at::TensorList momentum_buffers, at::TensorList master_params,
                    const at::Tensor& param_norms, const at::Tensor& grad_norms,
                    const std::optional<at::Tensor>& lr_t, double lr, double momentum,
                    double weight_decay, double trust_coefficient, double eps, bool adapt,
                    const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf);

}  // namespace mlperf_fast
