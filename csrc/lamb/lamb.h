#pragma once
// Adam-family steps over lists of tensors: LAMB (two passes with a per-tensor trust ratio between
// them) and Adam / AdamW (one pass), which share the moment update of csrc/common/optim_math.h.
// The lists (params, grads, the moments exp_avgs and exp_avg_sqs, master_params, steps) and the
// scalar operands are described in csrc/common/optim_args.h; LAMB also takes grad_norm, the
// global norm of the grads as given, for clipping to max_grad_norm > 0.
#include <ATen/core/Tensor.h>

#include <optional>

#include "common/optim_args.h"

namespace mlperf_fast {

// Hyperparameters of one Adam-family launch, as the kernels take them.
struct AdamArgs {
  ScalarArg lr, grad_norm, grad_scale, found_inf;
  double max_grad_norm = 0;
  double beta1 = 0, beta2 = 0, beta3 = 0, eps = 0, weight_decay = 0;
  bool bias_correction = true, adam_w_mode = true, adapt = true;
};

// The kernels of one backend (lamb.cpp: CPU, lamb_cuda.cu: CUDA) over checked lists: LAMB's
// two passes when `lamb`, else Adam's one. batch_elems: see lamb_step (CUDA only).
using AdamFamilyKernels = void (*)(at::TensorList params, at::TensorList grads,
                                   at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                                   at::TensorList master_params, at::TensorList steps,
                                   const AdamArgs& a, bool lamb, int64_t batch_elems);

// What lamb_step and adam_step check and take alike. beta3 is the weight of the new gradient
// in the first moment (optim_math.h).
inline AdamArgs adam_family_args(at::TensorList params, at::TensorList grads,
                                 at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                                 at::TensorList master_params, at::TensorList steps,
                                 const std::optional<at::Tensor>& lr_t, double lr, double beta1,
                                 double beta2, double beta3, double eps, double weight_decay,
                                 bool bias_correction, bool adam_w_mode,
                                 const std::optional<at::Tensor>& grad_scale,
                                 const std::optional<at::Tensor>& found_inf) {
  check_optim_lists(params, grads, {{exp_avgs, "exp_avgs"}, {exp_avg_sqs, "exp_avg_sqs"}},
                    master_params);
  check_steps(params, steps);
  AdamArgs a{.beta1 = beta1, .beta2 = beta2, .beta3 = beta3, .eps = eps,
             .weight_decay = weight_decay, .bias_correction = bias_correction,
             .adam_w_mode = adam_w_mode};
  set_step_scalars(a, params, lr_t, lr, grad_scale, found_inf);
  return a;
}

// The ops mlperf_fast::lamb_step and adam_step (schemas in csrc/registration.cpp), written once:
// each backend registers them over its kernels. batch_elems > 0 runs LAMB's two CUDA passes per
// batch of tensors of about that many elements (the CPU ignores it).
template <AdamFamilyKernels kKernels>
void lamb_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList master_params, at::TensorList steps,
               const std::optional<at::Tensor>& lr_t, double lr, double beta1, double beta2,
               double eps, double weight_decay, bool bias_correction, bool adam_w_mode,
               bool grad_averaging, bool use_nvlamb, const std::optional<at::Tensor>& grad_norm,
               double max_grad_norm, const std::optional<at::Tensor>& grad_scale,
               const std::optional<at::Tensor>& found_inf, int64_t batch_elems) {
  AdamArgs a = adam_family_args(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr_t,
                                lr, beta1, beta2, grad_averaging ? 1 - beta1 : 1.0, eps,
                                weight_decay, bias_correction, adam_w_mode, grad_scale,
                                found_inf);
  a.grad_norm = scalar_arg(grad_norm, 0, "grad_norm", params_device(params));
  a.max_grad_norm = max_grad_norm;
  a.adapt = use_nvlamb || weight_decay != 0;
  kKernels(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, a, true, batch_elems);
}

template <AdamFamilyKernels kKernels>
void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList master_params, at::TensorList steps,
               const std::optional<at::Tensor>& lr_t, double lr, double beta1, double beta2,
               double eps, double weight_decay, bool bias_correction, bool adam_w_mode,
               const std::optional<at::Tensor>& grad_scale,
               const std::optional<at::Tensor>& found_inf) {
  const AdamArgs a = adam_family_args(params, grads, exp_avgs, exp_avg_sqs, master_params, steps,
                                      lr_t, lr, beta1, beta2, 1 - beta1, eps, weight_decay,
                                      bias_correction, adam_w_mode, grad_scale, found_inf);
  kKernels(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, a, false, 0);
}

}  // namespace mlperf_fast
