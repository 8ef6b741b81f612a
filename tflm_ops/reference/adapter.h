// Bottleneck adapter (Houlsby et al.): a residual down-projection,
// nonlinearity, up-projection on a layer's output,
//   a = act(D x + bd),  y = x + U a + bu,
// with D [bottleneck, features], U [features, bottleneck]. U and bu start at
// zero, so a fresh adapter is the identity.
#ifndef TFLM_OPS_REFERENCE_ADAPTER_H_
#define TFLM_OPS_REFERENCE_ADAPTER_H_

#include "reference/fully_connected.h"
#include "reference/types.h"

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

// Everything works a row (one output position, `features` values) at a
// time, so that nothing but the rows in flight needs arena.

// hidden = act(D x + bd)   [bottleneck], for one row x [features]
inline void AdapterHiddenRow(const ValuesRef& x, const AdapterWeights& w,
                             Activation activation, int features,
                             int bottleneck, float* hidden) {
  WeightsRef down;
  down.f32 = w.down;
  MatVecFloat(x, down, 1, features, bottleneck, false, hidden);
  for (int k = 0; k < bottleneck; ++k) {
    hidden[k] = ApplyActivation(activation, hidden[k] + w.down_bias[k]);
  }
}

// y = x + U hidden + bu   [features], for one row
inline void AdapterOutputRow(const ValuesRef& x, const float* hidden,
                             const AdapterWeights& w, int features,
                             int bottleneck, float* y) {
  WeightsRef up;
  up.f32 = w.up;
  MatVecFloat(hidden, up, 1, bottleneck, features, false, y);
  for (int f = 0; f < features; ++f) {
    y[f] += w.up_bias[f];
    y[f] += x[f];
  }
}

// Given dy of one row, accumulates the parameter gradients and, when dx is
// not null, writes dx = dy + D^T dpre for that row. `dpre` is scratch of
// `bottleneck` floats.
inline void AdapterBackwardRow(const float* dy, const ValuesRef& x,
                               const float* hidden, const AdapterWeights& w,
                               const AdapterGrads& g, Activation activation,
                               int features, int bottleneck, float* dpre,
                               float* dx) {
  const GradRows dy_row = GradRows::Plain(dy, features);
  WeightGradAccumulate(dy_row, hidden, 1, bottleneck, features, g.up);
  BiasGradAccumulate(dy_row, 1, features, g.up_bias);
  WeightsRef up;
  up.f32 = w.up;
  InputGrad(dy_row, up, 1, bottleneck, features, false, dpre);
  for (int k = 0; k < bottleneck; ++k) {
    dpre[k] *= ActivationDerivativeFromOutput(activation, hidden[k]);
  }
  const GradRows pre_row = GradRows::Plain(dpre, bottleneck);
  WeightGradAccumulate(pre_row, x, 1, features, bottleneck, g.down);
  BiasGradAccumulate(pre_row, 1, bottleneck, g.down_bias);
  if (dx != nullptr) {
    for (int f = 0; f < features; ++f) dx[f] = dy[f];
    WeightsRef down;
    down.f32 = w.down;
    InputGrad(pre_row, down, 1, features, bottleneck, true, dx);
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_ADAPTER_H_
