#pragma once
// Argument checks shared by every op. Errors name the argument and surface in Python as
// ValueError (bad values, shapes, devices) or TypeError (bad dtypes).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cstdio>
#include <type_traits>

// The message is built as one std::string (see detail::message) and handed to torch whole.
#define MF_CHECK_VALUE(cond, arg, ...) \
  TORCH_CHECK_VALUE(cond, ::mlperf_fast::detail::message("mlperf_fast: argument '", arg, "': ", __VA_ARGS__))
#define MF_CHECK_TYPE(cond, arg, ...) \
  TORCH_CHECK_TYPE(cond, ::mlperf_fast::detail::message("mlperf_fast: argument '", arg, "': ", __VA_ARGS__))

namespace mlperf_fast {

namespace detail {
// Error messages are formatted without std::ostream: numbers through std::to_string and
// snprintf, dtypes and devices through c10's own names. An extension built with a newer C++
// toolchain than the one that built torch can find the stream's number formatter missing
// (seen on a GPU machine: a segfault instead of the error, for every message with a number in
// it), and these paths never touch it.
inline void append(std::string& s, const char* x) { s += x; }
inline void append(std::string& s, const std::string& x) { s += x; }
inline void append(std::string& s, char x) { s += x; }
inline void append(std::string& s, bool x) { s += x ? "true" : "false"; }
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
void append(std::string& s, T x) {
  s += std::to_string(x);
}
inline void append(std::string& s, double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", x);
  s += buf;
}
inline void append(std::string& s, float x) { append(s, static_cast<double>(x)); }
inline void append(std::string& s, at::ScalarType x) { s += c10::toString(x); }
inline void append(std::string& s, const c10::Device& x) { s += x.str(); }
inline void append(std::string& s, c10::IntArrayRef x) {
  s += '[';
  for (size_t i = 0; i < x.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(x[i]);
  }
  s += ']';
}

template <typename... Args>
std::string message(const Args&... args) {
  std::string s;
  (append(s, args), ...);
  return s;
}
}  // namespace detail

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
