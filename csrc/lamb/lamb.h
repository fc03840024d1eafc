#pragma once
// Adam-family steps over lists of tensors: LAMB (two passes with a per-tensor trust ratio between
// them) and Adam / AdamW (one pass), which share the moment update of csrc/common/optim_math.h.
//
// Lists, all of one length n and parallel (tensor i of each list belongs to parameter i):
//   params        the model's parameters: float32 or float64, or float16 / bfloat16 when
//                 master_params is given (then they receive the rounded master weights)
//   grads         their gradients, of the params' dtype
//   exp_avgs, exp_avg_sqs   first and second moments, of the math dtype (float64 for float64
//                 params, else float32)
//   master_params empty, or float32 copies of float16 / bfloat16 params that the step updates
//   steps         one-element float32 tensors: each parameter's step count, already advanced
//                 for this step (bias corrections use it)
// Optional one-element tensors on the params' device: lr_t (overrides lr), grad_norm (global
// norm of the grads as given, for clipping to max_grad_norm > 0), grad_scale (grads are divided
// by it), found_inf (nonzero: the whole step is skipped).
#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

#include "common/checks.h"
#include "common/optim_math.h"

namespace mlperf_fast {

// Elements per chunk: one CUDA block's work, and one CPU work item.
constexpr int64_t kOptimChunk = 8192;

inline ScalarArg scalar_arg(const std::optional<at::Tensor>& t, double value, const char* name,
                            const at::Device& device) {
  ScalarArg a;
  a.value = value;
  if (!t.has_value() || !t->defined()) return a;
  MF_CHECK_VALUE(t->numel() == 1, name, "must have one element, got ", t->numel());
  MF_CHECK_VALUE(t->device() == device, name, "is on ", t->device(), " but the params are on ",
                 device);
  MF_CHECK_TYPE(t->scalar_type() == at::kFloat || t->scalar_type() == at::kDouble, name,
                "must be float32 or float64, got ", t->scalar_type());
  a.ptr = t->data_ptr();
  a.kind = t->scalar_type() == at::kFloat ? 1 : 2;
  return a;
}

inline void check_contiguous_list(at::TensorList list, const char* name) {
  for (size_t i = 0; i < list.size(); ++i)
    MF_CHECK_VALUE(list[i].is_contiguous(), name, "element ", i, " is not contiguous");
}

// Checks the parallel lists of an optimizer step (see the top of this file); `state` are the
// per-parameter state lists of the math dtype (moments, momentum buffers). Returns whether
// master weights are used.
inline bool check_optim_lists(at::TensorList params, at::TensorList grads,
                              const std::vector<std::pair<at::TensorList, const char*>>& state,
                              at::TensorList master_params) {
  check_float_list(params, "params");
  check_parallel_lists(params, "params", grads, "grads");
  check_float_list(grads, "grads");
  const bool master = !master_params.empty();
  if (master) check_parallel_lists(params, "params", master_params, "master_params");
  for (const auto& [list, name] : state) check_parallel_lists(params, "params", list, name);
  if (params.empty()) return master;
  const at::Device device = params[0].device();
  for (size_t i = 0; i < params.size(); ++i) {
    const at::ScalarType pt = params[i].scalar_type();
    MF_CHECK_TYPE(grads[i].scalar_type() == pt, "grads", "element ", i, " has dtype ",
                  grads[i].scalar_type(), " but its parameter has ", pt);
    MF_CHECK_VALUE(grads[i].device() == device, "grads", "element ", i, " is on ",
                   grads[i].device(), " but the params are on ", device);
    at::ScalarType math = pt;
    if (master) {
      MF_CHECK_TYPE(pt == at::kHalf || pt == at::kBFloat16, "params", "element ", i,
                    " has dtype ", pt, "; master weights are for float16 and bfloat16 params");
      MF_CHECK_TYPE(master_params[i].scalar_type() == at::kFloat, "master_params", "element ", i,
                    " must be float32, got ", master_params[i].scalar_type());
      MF_CHECK_VALUE(master_params[i].device() == device, "master_params", "element ", i,
                     " is on ", master_params[i].device(), " but the params are on ", device);
      math = at::kFloat;
    } else {
      MF_CHECK_TYPE(pt == at::kFloat || pt == at::kDouble, "params", "element ", i,
                    " has dtype ", pt, "; float16 and bfloat16 params need float32 master_params");
    }
    for (const auto& [list, name] : state) {
      MF_CHECK_TYPE(list[i].scalar_type() == math, name, "element ", i, " has dtype ",
                    list[i].scalar_type(), "; expected ", math);
      MF_CHECK_VALUE(list[i].device() == device, name, "element ", i, " is on ",
                     list[i].device(), " but the params are on ", device);
    }
  }
  check_contiguous_list(params, "params");
  check_contiguous_list(grads, "grads");
  check_contiguous_list(master_params, "master_params");
  for (const auto& [list, name] : state) check_contiguous_list(list, name);
  return master;
}

inline void check_steps(at::TensorList params, at::TensorList steps) {
  MF_CHECK_VALUE(steps.size() == params.size(), "steps", "has ", steps.size(),
                 " tensors but 'params' has ", params.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    MF_CHECK_VALUE(steps[i].numel() == 1, "steps", "element ", i, " must have one element");
    MF_CHECK_TYPE(steps[i].scalar_type() == at::kFloat, "steps", "element ", i,
                  " must be float32, got ", steps[i].scalar_type());
    MF_CHECK_VALUE(steps[i].device() == params[i].device(), "steps", "element ", i, " is on ",
                   steps[i].device(), " but its parameter is on ", params[i].device());
  }
}

// Hyperparameters of one Adam-family launch, as the kernels take them.
struct AdamArgs {
  ScalarArg lr, grad_norm, grad_scale, found_inf;
  double max_grad_norm = 0;
  double beta1 = 0, beta2 = 0, beta3 = 0, eps = 0, weight_decay = 0;
  bool bias_correction = true, adam_w_mode = true, adapt = true;
};

AdamArgs make_adam_args(at::TensorList params, const std::optional<at::Tensor>& lr_t, double lr,
                        double beta1, double beta2, double beta3, double eps,
                        double weight_decay, bool bias_correction, bool adam_w_mode,
                        const std::optional<at::Tensor>& grad_norm, double max_grad_norm,
                        const std::optional<at::Tensor>& grad_scale,
                        const std::optional<at::Tensor>& found_inf);

void lamb_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                   at::TensorList exp_avg_sqs, at::TensorList master_params,
                   at::TensorList steps, const std::optional<at::Tensor>& lr_t, double lr,
                   double beta1, double beta2, double eps, double weight_decay,
                   bool bias_correction, bool adam_w_mode, bool grad_averaging, bool use_nvlamb,
                   const std::optional<at::Tensor>& grad_norm, double max_grad_norm,
                   const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf, int64_t batch_elems);
void lamb_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList master_params,
                    at::TensorList steps, const std::optional<at::Tensor>& lr_t, double lr,
                    double beta1, double beta2, double eps, double weight_decay,
                    bool bias_correction, bool adam_w_mode, bool grad_averaging, bool use_nvlamb,
                    const std::optional<at::Tensor>& grad_norm, double max_grad_norm,
                    const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf, int64_t batch_elems);

void adam_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                   at::TensorList exp_avg_sqs, at::TensorList master_params,
                   at::TensorList steps, const std::optional<at::Tensor>& lr_t, double lr,
                   double beta1, double beta2, double eps, double weight_decay,
                   bool bias_correction, bool adam_w_mode,
                   const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf);
void adam_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList master_params,
                    at::TensorList steps, const std::optional<at::Tensor>& lr_t, double lr,
                    double beta1, double beta2, double eps, double weight_decay,
                    bool bias_correction, bool adam_w_mode,
                    const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf);

}  // namespace mlperf_fast
