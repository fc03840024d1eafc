#pragma once
// The arguments of the fused optimizer steps (csrc/lamb, csrc/sgd) and their checks, shared by
// every backend: each op's entry point (lamb.h, sgd.h) is written once, checks its arguments
// with these, and hands them to the CPU or the CUDA kernels.
//
// Lists, all of one length n and parallel (tensor i of each list belongs to parameter i):
//   params        the model's parameters, all of one dtype: float32 or float64, or float16 /
//                 bfloat16 when master_params is given (then they receive the rounded master
//                 weights)
//   grads         their gradients, of the params' dtype
//   state lists   per-parameter state of the math dtype (float64 for float64 params, else
//                 float32): Adam's moments, SGD's and LARS's momentum buffers
//   master_params empty, or float32 copies of float16 / bfloat16 params that the step updates
//   steps         one-element float32 tensors: each parameter's step count, already advanced
//                 for this step (Adam-family bias corrections use it)
// Scalar operands are host numbers or optional one-element float32 / float64 tensors on the
// params' device: lr_t (overrides lr), grad_scale (grads are divided by it), found_inf (nonzero:
// the whole step is skipped), and LAMB's grad_norm.
#include <ATen/core/Tensor.h>

#include <optional>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "common/optim_math.h"

namespace mlperf_fast {

// Elements per chunk: one CUDA block's work (SGD, LARS), and one CPU work item.
constexpr int64_t kOptimChunk = 8192;

// A per-parameter state list and its argument name, for the error messages.
using StateList = std::pair<at::TensorList, const char*>;

inline at::Device params_device(at::TensorList params) {
  return params.empty() ? at::Device(at::kCPU) : params[0].device();
}

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

// The scalar operands every step takes (Args has lr, grad_scale and found_inf): lr, or lr_t
// in its place; GradScaler's scale (1 without) and found_inf (0 without).
template <typename Args>
void set_step_scalars(Args& a, at::TensorList params, const std::optional<at::Tensor>& lr_t,
                      double lr, const std::optional<at::Tensor>& grad_scale,
                      const std::optional<at::Tensor>& found_inf) {
  const at::Device device = params_device(params);
  a.lr = scalar_arg(lr_t, lr, "lr", device);
  a.grad_scale = scalar_arg(grad_scale, 1, "grad_scale", device);
  a.found_inf = scalar_arg(found_inf, 0, "found_inf", device);
}

inline void check_contiguous_list(at::TensorList list, const char* name) {
  for (size_t i = 0; i < list.size(); ++i)
    MF_CHECK_VALUE(list[i].is_contiguous(), name, "element ", i, " is not contiguous");
}

// Checks the parallel lists of a step (see the top of this file). Returns whether master
// weights are used.
inline bool check_optim_lists(at::TensorList params, at::TensorList grads,
                              const std::vector<StateList>& state,
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
    MF_CHECK_TYPE(pt == params[0].scalar_type(), "params", "element ", i, " has dtype ", pt,
                  " but element 0 has ", params[0].scalar_type(), "; one call takes one dtype");
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

}  // namespace mlperf_fast
