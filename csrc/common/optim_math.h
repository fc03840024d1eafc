#pragma once
// The per-element arithmetic of the fused optimizers, written once for the CPU kernels (.cpp)
// and the CUDA kernels (.cu), so that both backends evaluate the same expressions in the same
// order. T is the math type: float for float32 parameters and for float16 / bfloat16 parameters
// with float32 master weights, double for float64 parameters.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MF_HD __host__ __device__ __forceinline__
#else
#define MF_HD inline
#endif

namespace mlperf_fast {

// A scalar operand that is either a host number or a one-element tensor on the device (a
// capturable learning rate, a global gradient norm, GradScaler's scale and found_inf). Reading
// it inside the kernel keeps step() free of host synchronizations.
struct ScalarArg {
  const void* ptr = nullptr;
  int kind = 0;  // 0: `value`; 1: *(const float*)ptr; 2: *(const double*)ptr
  double value = 0;

  MF_HD double get() const {
    if (kind == 1) return static_cast<double>(*static_cast<const float*>(ptr));
    if (kind == 2) return *static_cast<const double*>(ptr);
    return value;
  }
};

template <typename T>
MF_HD T mf_sqrt(T x) {
#if defined(__CUDA_ARCH__)
  return sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// What every tensor of a launch shares: the divisor of the raw gradients (GradScaler's scale
// times the global-norm clipping factor) and whether the step is skipped.
struct GradPrologue {
  bool skip;
  double divisor;
};

// found_inf != 0 skips the step. Gradients are divided by grad_scale, then by
// max(1, ||g / grad_scale|| / max_grad_norm) when clipping is on (max_grad_norm > 0).
MF_HD GradPrologue grad_prologue(const ScalarArg& found_inf, const ScalarArg& grad_scale,
                                 const ScalarArg& grad_norm, double max_grad_norm) {
  GradPrologue out{false, 1.0};
  if (found_inf.kind != 0 && found_inf.get() != 0.0) {
    out.skip = true;
    return out;
  }
  const double scale = grad_scale.kind != 0 ? grad_scale.get() : 1.0;
  out.divisor = scale;
  if (grad_norm.kind != 0 && max_grad_norm > 0) {
    const double norm = grad_norm.get() / scale;
    if (norm > max_grad_norm) out.divisor = scale * (norm / max_grad_norm);
  }
  return out;
}

// Adam-family hyperparameters of one launch. beta3 is the weight of the new gradient in the
// first moment: 1 - beta1, or 1 for LAMB without grad averaging.
template <typename T>
struct AdamCoeffs {
  T beta1, beta2, beta3, eps, weight_decay;
  T bc1, bc2;  // bias corrections 1 - beta^step (1 without bias correction)
  bool adam_w_mode;
};

template <typename T>
MF_HD AdamCoeffs<T> adam_coeffs(double beta1, double beta2, double beta3, double eps,
                                double weight_decay, bool bias_correction, bool adam_w_mode,
                                double step) {
  AdamCoeffs<T> c;
  c.beta1 = static_cast<T>(beta1);
  c.beta2 = static_cast<T>(beta2);
  c.beta3 = static_cast<T>(beta3);
  c.eps = static_cast<T>(eps);
  c.weight_decay = static_cast<T>(weight_decay);
  c.bc1 = bias_correction ? static_cast<T>(1.0 - pow(beta1, step)) : T(1);
  c.bc2 = bias_correction ? static_cast<T>(1.0 - pow(beta2, step)) : T(1);
  c.adam_w_mode = adam_w_mode;
  return c;
}

// The update direction from the new moments: m^ / (sqrt(v^) + eps), plus the decoupled weight
// decay term in AdamW mode. LAMB's second pass calls this again on the stored moments and the
// unchanged parameter, and gets the value the first pass used for ||update||.
template <typename T>
MF_HD T adam_direction(T p, T m, T v, const AdamCoeffs<T>& c) {
  T u = (m / c.bc1) / (mf_sqrt(v / c.bc2) + c.eps);
  if (c.adam_w_mode) u += c.weight_decay * p;
  return u;
}

// Updates the moments with the (already unscaled and clipped) gradient g and returns the
// direction. In L2 mode (adam_w_mode false) the decay is added to the gradient.
template <typename T>
MF_HD T adam_moments(T p, T g, T& m, T& v, const AdamCoeffs<T>& c) {
  if (!c.adam_w_mode) g += c.weight_decay * p;
  m = c.beta1 * m + c.beta3 * g;
  v = c.beta2 * v + (T(1) - c.beta2) * g * g;
  return adam_direction(p, m, v, c);
}

// LAMB's trust ratio from the tensor's squared norms: ||p|| / ||update||, 1 where either is 0
// or where the tensor is not adapted (no weight decay and not NVLAMB, as apex does).
template <typename T>
MF_HD T lamb_trust_ratio(T p_squares, T u_squares, bool adapt) {
  if (!adapt || !(p_squares > 0) || !(u_squares > 0)) return T(1);
  return mf_sqrt(p_squares) / mf_sqrt(u_squares);
}

// SGD as torch.optim.SGD: d = g + wd p; buf = d on the first step, else
// momentum buf + (1 - dampening) d; the step is nesterov ? d + momentum buf : buf.
template <typename T>
struct SgdCoeffs {
  T momentum, dampening, weight_decay;
  bool nesterov, first_run, has_momentum;
};

template <typename T>
MF_HD T sgd_direction(T p, T g, T& buf, const SgdCoeffs<T>& c) {
  T d = g + c.weight_decay * p;
  if (!c.has_momentum) return d;
  buf = c.first_run ? d : c.momentum * buf + (T(1) - c.dampening) * d;
  return c.nesterov ? d + c.momentum * buf : buf;
}

// LARS as the MLPerf ResNet-50 submissions use it: trust = eta ||p|| / (||g|| + wd ||p|| + eps)
// (1 where a norm is 0, or for tensors excluded from adaptation), then classic momentum with the
// scaled learning rate inside the buffer: buf = momentum buf + lr trust (g + wd p); p -= buf.
template <typename T>
MF_HD T lars_trust_ratio(T p_norm, T g_norm, T trust_coefficient, T weight_decay, T eps,
                         bool adapt) {
  if (!adapt || !(p_norm > 0) || !(g_norm > 0)) return T(1);
  return trust_coefficient * p_norm / (g_norm + weight_decay * p_norm + eps);
}

}  // namespace mlperf_fast
