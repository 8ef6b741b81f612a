// Parameter updates, written to match Keras 3's optimizers step for step
// (so training through TFLM can be checked against TensorFlow):
//   SGD:       w -= lr g
//   momentum:  v = momentum v - lr g;  w += v
//   Adam:      m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2);
//              w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
// `grad_scale` turns summed gradients into the ones to apply (1/N for N
// accumulated samples, times the clipping factor).
#ifndef TFLM_OPS_REFERENCE_OPTIMIZER_H_
#define TFLM_OPS_REFERENCE_OPTIMIZER_H_

#include <cmath>

namespace tflmt {
namespace reference {

inline float SumOfSquares(const float* values, int n) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += values[i] * values[i];
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

inline void SgdUpdate(float* params, const float* grads, int n, float lr,
                      float grad_scale) {
  for (int i = 0; i < n; ++i) params[i] -= lr * grad_scale * grads[i];
}

inline void MomentumUpdate(float* params, const float* grads, float* velocity,
                           int n, float lr, float momentum, float grad_scale) {
  for (int i = 0; i < n; ++i) {
    velocity[i] = momentum * velocity[i] - lr * grad_scale * grads[i];
    params[i] += velocity[i];
  }
}

// `step` counts from 1 for the first update.
inline void AdamUpdate(float* params, const float* grads, float* m, float* v,
                       int n, float lr, float beta1, float beta2,
                       float epsilon, int step, float grad_scale) {
  const float beta1_power = std::pow(beta1, static_cast<float>(step));
  const float beta2_power = std::pow(beta2, static_cast<float>(step));
  const float alpha = lr * std::sqrt(1.0f - beta2_power) / (1.0f - beta1_power);
  for (int i = 0; i < n; ++i) {
    const float g = grad_scale * grads[i];
    m[i] += (g - m[i]) * (1.0f - beta1);
    v[i] += (g * g - v[i]) * (1.0f - beta2);
    params[i] -= alpha * m[i] / (std::sqrt(v[i]) + epsilon);
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_OPTIMIZER_H_
