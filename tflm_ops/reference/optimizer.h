// Parameter updates, written to match Keras 3's optimizers step for step
// (so training through TFLM can be checked against TensorFlow):
//   SGD:       w -= lr g
//   momentum:  v = momentum v - lr g;  w += v
//   Adam:      m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2);
//              w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
// `grad_scale` turns summed gradients into the ones to apply (1/N for N
// accumulated samples, times the clipping factor).
//
// A penalty toward the starting parameters w0 (L2-SP: lambda/2 |w - w0|^2;
// EWC: lambda/2 sum F_i (w_i - w0_i)^2) enters as its gradient, added to the
// mean data gradient before clipping and before the rule - what
// tf.GradientTape gives for (loss + penalty) - see AddAnchorPenaltyGradient.
//
// Each rule is one per-value function (`...Step`) used twice: by
// `...UpdateIsFinite`, which computes every new value without writing and
// tells whether all are finite, and by `...Update`, which writes them. The
// optimizer op applies an update only when the first says yes, so a finite
// but huge learning rate cannot write inf into the adapter; both use the
// same expressions, so the applied values are exactly those checked.
#ifndef TFLM_OPS_REFERENCE_OPTIMIZER_H_
#define TFLM_OPS_REFERENCE_OPTIMIZER_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "reference/math.h"

namespace tflmt {
namespace reference {

// 1 for NaN or infinity, else 0. On the bits: no branch, so the checks below
// vectorize (4x faster than an early exit on x86), and -ffast-math cannot
// remove it.
inline uint32_t NonFinite(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return (bits & 0x7F800000u) == 0x7F800000u ? 1u : 0u;
}

// Eight running sums: one sum is a chain of dependent adds (4 cycles each on
// x86, ~4 us for a 2,778-parameter MLP, more than its whole backward pass);
// independent sums pipeline and vectorize.
inline float SumOfSquares(const float* values, int n) {
  constexpr int kLanes = 8;
  float lanes[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) lanes[k] += values[i + k] * values[i + k];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += values[i] * values[i];
  for (int k = 0; k < kLanes; ++k) sum += lanes[k];
  return sum;
}

// Factor that brings the global norm of (grad_scale * grads) to at most
// clip_norm (tf.clip_by_global_norm); 1 when clip_norm <= 0.
inline float ClipFactor(const float* grads, int n, float grad_scale,
                        float clip_norm) {
  if (clip_norm <= 0.0f) return 1.0f;
  const float norm = grad_scale * std::sqrt(SumOfSquares(grads, n));
  return norm > clip_norm ? clip_norm / norm : 1.0f;
}

inline float SgdStep(float param, float grad, float lr, float grad_scale) {
  return param - lr * grad_scale * grad;
}

inline bool SgdUpdateIsFinite(const float* params, const float* grads, int n,
                              float lr, float grad_scale) {
  uint32_t bad = 0;
  for (int i = 0; i < n; ++i) {
    bad |= NonFinite(SgdStep(params[i], grads[i], lr, grad_scale));
  }
  return bad == 0;
}

inline void SgdUpdate(float* params, const float* grads, int n, float lr,
                      float grad_scale) {
  for (int i = 0; i < n; ++i) {
    params[i] = SgdStep(params[i], grads[i], lr, grad_scale);
  }
}

struct MomentumValues {
  float param;
  float velocity;
};

inline MomentumValues MomentumStep(float param, float velocity, float grad,
                                   float lr, float momentum,
                                   float grad_scale) {
  const float new_velocity = momentum * velocity - lr * grad_scale * grad;
  return {param + new_velocity, new_velocity};
}

inline bool MomentumUpdateIsFinite(const float* params, const float* grads,
                                   const float* velocity, int n, float lr,
                                   float momentum, float grad_scale) {
  uint32_t bad = 0;
  for (int i = 0; i < n; ++i) {
    const MomentumValues next = MomentumStep(params[i], velocity[i], grads[i],
                                             lr, momentum, grad_scale);
    bad |= NonFinite(next.param) | NonFinite(next.velocity);
  }
  return bad == 0;
}

inline void MomentumUpdate(float* params, const float* grads, float* velocity,
                           int n, float lr, float momentum, float grad_scale) {
  for (int i = 0; i < n; ++i) {
    const MomentumValues next = MomentumStep(params[i], velocity[i], grads[i],
                                             lr, momentum, grad_scale);
    velocity[i] = next.velocity;
    params[i] = next.param;
  }
}

// The bias-corrected step size of Adam's `step`-th update (from 1).
inline float AdamAlpha(float lr, float beta1, float beta2, int step) {
  const float beta1_power = Pow(beta1, static_cast<float>(step));
  const float beta2_power = Pow(beta2, static_cast<float>(step));
  return lr * std::sqrt(1.0f - beta2_power) / (1.0f - beta1_power);
}

struct AdamValues {
  float param;
  float m;
  float v;
};

inline AdamValues AdamStep(float param, float m, float v, float grad,
                           float alpha, float beta1, float beta2,
                           float epsilon, float grad_scale) {
  const float g = grad_scale * grad;
  const float new_m = m + (g - m) * (1.0f - beta1);
  const float new_v = v + (g * g - v) * (1.0f - beta2);
  return {param - alpha * new_m / (std::sqrt(new_v) + epsilon), new_m, new_v};
}

// `step` counts from 1 for the first update.
inline bool AdamUpdateIsFinite(const float* params, const float* grads,
                               const float* m, const float* v, int n, float lr,
                               float beta1, float beta2, float epsilon,
                               int step, float grad_scale) {
  const float alpha = AdamAlpha(lr, beta1, beta2, step);
  uint32_t bad = 0;
  for (int i = 0; i < n; ++i) {
    const AdamValues next = AdamStep(params[i], m[i], v[i], grads[i], alpha,
                                     beta1, beta2, epsilon, grad_scale);
    bad |= NonFinite(next.param) | NonFinite(next.m) | NonFinite(next.v);
  }
  return bad == 0;
}

inline void AdamUpdate(float* params, const float* grads, float* m, float* v,
                       int n, float lr, float beta1, float beta2,
                       float epsilon, int step, float grad_scale) {
  const float alpha = AdamAlpha(lr, beta1, beta2, step);
  for (int i = 0; i < n; ++i) {
    const AdamValues next = AdamStep(params[i], m[i], v[i], grads[i], alpha,
                                     beta1, beta2, epsilon, grad_scale);
    params[i] = next.param;
    m[i] = next.m;
    v[i] = next.v;
  }
}

// Adds the gradient of lambda/2 sum F_i (w_i - w0_i)^2 to summed gradients:
// grads_i += scale F_i (w_i - w0_i), with scale = lambda * N for N summed
// samples (the rules above divide the sum by N again). `fisher` null: F = 1
// (L2-SP).
inline void AddAnchorPenaltyGradient(float* grads, const float* params,
                                     const float* anchor, const float* fisher,
                                     int n, float scale) {
  if (fisher == nullptr) {
    for (int i = 0; i < n; ++i) grads[i] += scale * (params[i] - anchor[i]);
  } else {
    for (int i = 0; i < n; ++i) {
      grads[i] += scale * fisher[i] * (params[i] - anchor[i]);
    }
  }
}

// The penalty itself, lambda/2 sum F_i (w_i - w0_i)^2 (`fisher` null: F = 1).
inline float AnchorPenalty(const float* params, const float* anchor,
                           const float* fisher, int n, float lambda) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float d = params[i] - anchor[i];
    sum += (fisher == nullptr ? 1.0f : fisher[i]) * d * d;
  }
  return 0.5f * lambda * sum;
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_OPTIMIZER_H_
