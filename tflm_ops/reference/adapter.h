// Bottleneck adapter (Houlsby et al.): a residual down-projection,
// nonlinearity, up-projection on a layer's output,
//   a = act(D x + bd),  y = x + U a + bu,
// with D [bottleneck, features], U [features, bottleneck]. U and bu start at
// zero, so a fresh adapter is the identity.
#ifndef TFLM_OPS_REFERENCE_ADAPTER_H_
#define TFLM_OPS_REFERENCE_ADAPTER_H_

#include "reference/fully_connected.h"
#include "reference/quantization.h"

namespace tflmt {
namespace reference {

struct AdapterWeights {
  const float* down;       // D
  const float* down_bias;  // bd
  const float* up;         // U
  const float* up_bias;    // bu
};

struct AdapterGrads {
  float* down;
  float* down_bias;
  float* up;
  float* up_bias;
};

// hidden = act(D x + bd) [batches, bottleneck]; delta = U hidden + bu.
inline void AdapterForward(const ValuesRef& x, const AdapterWeights& w,
                           Activation activation, int batches, int features,
                           int bottleneck, float* hidden, float* delta) {
  WeightsRef down;
  down.f32 = w.down;
  MatVecFloat(x, down, batches, features, bottleneck, false, hidden);
  for (int b = 0; b < batches; ++b) {
    for (int k = 0; k < bottleneck; ++k) {
      float& h = hidden[b * bottleneck + k];
      h = ApplyActivation(activation, h + w.down_bias[k]);
    }
  }
  WeightsRef up;
  up.f32 = w.up;
  MatVecFloat(hidden, up, batches, bottleneck, features, false, delta);
  for (int b = 0; b < batches; ++b) {
    for (int f = 0; f < features; ++f) delta[b * features + f] += w.up_bias[f];
  }
}

// Given dy, accumulates the parameter gradients and, when dx is not null,
// writes dx = dy + D^T dpre. `dpre` is scratch of batches * bottleneck floats.
inline void AdapterBackward(const float* dy, const ValuesRef& x,
                            const float* hidden, const AdapterWeights& w,
                            const AdapterGrads& g, Activation activation,
                            int batches, int features, int bottleneck,
                            float* dpre, float* dx) {
  const GradRows dy_rows = GradRows::Plain(dy, features);
  WeightGradAccumulate(dy_rows, hidden, batches, bottleneck, features, g.up);
  BiasGradAccumulate(dy_rows, batches, features, g.up_bias);
  WeightsRef up;
  up.f32 = w.up;
  InputGrad(dy_rows, up, batches, bottleneck, features, false, dpre);
  const int n = batches * bottleneck;
  for (int i = 0; i < n; ++i) {
    dpre[i] *= ActivationDerivativeFromOutput(activation, hidden[i]);
  }
  const GradRows pre_rows = GradRows::Plain(dpre, bottleneck);
  WeightGradAccumulate(pre_rows, x, batches, features, bottleneck, g.down);
  BiasGradAccumulate(pre_rows, batches, bottleneck, g.down_bias);
  if (dx != nullptr) {
    const int m = batches * features;
    for (int i = 0; i < m; ++i) dx[i] = dy[i];
    WeightsRef down;
    down.f32 = w.down;
    InputGrad(pre_rows, down, batches, features, bottleneck, true, dx);
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_ADAPTER_H_
