#pragma once
// Argument checks shared by every op. Errors name the argument and surface in Python as
// ValueError (bad values, shapes, devices) or TypeError (bad dtypes).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#define MF_CHECK_VALUE(cond, arg, ...) \
  TORCH_CHECK_VALUE(cond, "mlperf_fast: argument '", arg, "': ", __VA_ARGS__)
#define MF_CHECK_TYPE(cond, arg, ...) \
  TORCH_CHECK_TYPE(cond, "mlperf_fast: argument '", arg, "': ", __VA_ARGS__)

namespace mlperf_fast {

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Every tensor of a list: defined, dense, on one device, of a floating dtype.
inline void check_float_list(at::TensorList list, const char* name) {
  for (size_t i = 0; i < list.size(); ++i) {
    const at::Tensor& t = list[i];
    MF_CHECK_VALUE(t.defined(), name, "element ", i, " is undefined");
    MF_CHECK_VALUE(t.layout() == at::kStrided, name, "element ", i, " is not a dense tensor");
    MF_CHECK_TYPE(is_float_dtype(t.scalar_type()), name, "element ", i,
                  " has dtype ", t.scalar_type(), "; expected float32, float64, float16 or bfloat16");
    MF_CHECK_VALUE(t.device() == list[0].device(), name, "element ", i, " is on ", t.device(),
                   " but element 0 is on ", list[0].device());
  }
}

// Lists that are walked together (params, grads, moments): same length, same shapes.
inline void check_parallel_lists(at::TensorList a, const char* name_a, at::TensorList b,
                                 const char* name_b) {
  MF_CHECK_VALUE(a.size() == b.size(), name_b, "has ", b.size(), " tensors but '", name_a,
                 "' has ", a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    MF_CHECK_VALUE(a[i].sizes() == b[i].sizes(), name_b, "element ", i, " has shape ",
                   b[i].sizes(), " but '", name_a, "' element ", i, " has shape ", a[i].sizes());
  }
}

}  // namespace mlperf_fast
