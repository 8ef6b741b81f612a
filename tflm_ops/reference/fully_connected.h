// Fully-connected forward and backward math on raw pointers.
//
// Layouts follow TFLite: weights [units, in_features] row-major, inputs
// [batches, in_features], outputs [batches, units].
// "Accumulate" functions add into their output so that gradients of a batch,
// or of several samples, sum without a scratch copy.
#ifndef TFLM_OPS_REFERENCE_FULLY_CONNECTED_H_
#define TFLM_OPS_REFERENCE_FULLY_CONNECTED_H_

#include <cstdint>

#include "reference/types.h"

namespace tflmt {
namespace reference {

// out[b, o] = sum_i w[o, i] * x[b, i]   (+ out[b, o] when accumulating)
inline void MatVecFloat(const ValuesRef& x, const WeightsRef& w, int batches,
                        int in_features, int units, bool accumulate,
                        float* out) {
  for (int b = 0; b < batches; ++b) {
    const ValuesRef xb = x.Offset(b * in_features);
    for (int o = 0; o < units; ++o) {
      float sum = 0.0f;
      if (w.f32 != nullptr) {
        const float* row = w.f32 + o * in_features;
        for (int i = 0; i < in_features; ++i) sum += row[i] * xb[i];
      } else {
        const int8_t* row = w.i8 + o * in_features;
        for (int i = 0; i < in_features; ++i) sum += row[i] * xb[i];
        sum *= w.Scale(o);
      }
      float* dst = out + b * units + o;
      *dst = accumulate ? *dst + sum : sum;
    }
  }
}

// Integer accumulators of a frozen int8 layer: sum_i (x - x_zp) * w + bias.
inline void AccumulateInt8(const int8_t* x, int32_t x_zero_point,
                           const int8_t* w, const int32_t* bias, int batches,
                           int in_features, int units, int32_t* acc) {
  for (int b = 0; b < batches; ++b) {
    const int8_t* xb = x + b * in_features;
    for (int o = 0; o < units; ++o) {
      const int8_t* row = w + o * in_features;
      int32_t sum = bias != nullptr ? bias[o] : 0;
      for (int i = 0; i < in_features; ++i) {
        sum += (static_cast<int32_t>(xb[i]) - x_zero_point) * row[i];
      }
      acc[b * units + o] = sum;
    }
  }
}

// dx[b, i] (+)= sum_o dz[b, o] * w[o, i]
inline void InputGrad(const GradRows& dz, const WeightsRef& w, int batches,
                      int in_features, int units, bool accumulate, float* dx) {
  for (int b = 0; b < batches; ++b) {
    float* dxb = dx + b * in_features;
    if (!accumulate) {
      for (int i = 0; i < in_features; ++i) dxb[i] = 0.0f;
    }
    const float* dzb = dz.Row(b);
    for (int o = 0; o < units; ++o) {
      const float g = dzb[o];
      if (g == 0.0f) continue;
      if (w.f32 != nullptr) {
        const float* row = w.f32 + o * in_features;
        for (int i = 0; i < in_features; ++i) dxb[i] += g * row[i];
      } else {
        const float gs = g * w.Scale(o);
        const int8_t* row = w.i8 + o * in_features;
        for (int i = 0; i < in_features; ++i) dxb[i] += gs * row[i];
      }
    }
  }
}

// dw[o, i] += sum_b dz[b, o] * x[b, i]   (outer product, summed over batch)
inline void WeightGradAccumulate(const GradRows& dz, const ValuesRef& x, int batches,
                                 int in_features, int units, float* dw) {
  for (int b = 0; b < batches; ++b) {
    const ValuesRef xb = x.Offset(b * in_features);
    const float* dzb = dz.Row(b);
    for (int o = 0; o < units; ++o) {
      const float g = dzb[o];
      if (g == 0.0f) continue;
      float* row = dw + o * in_features;
      for (int i = 0; i < in_features; ++i) row[i] += g * xb[i];
    }
  }
}

// db[o] += sum over rows of dz[row, o]
inline void BiasGradAccumulate(const GradRows& dz, int rows, int units,
                               float* db) {
  for (int r = 0; r < rows; ++r) {
    const float* dzr = dz.Row(r);
    for (int o = 0; o < units; ++o) db[o] += dzr[o];
  }
}

// dz[k] = dy[k] * activation'(y[k]); dz may be dy itself (in place).
inline void ActivationGradFloat(Activation activation, const float* dy,
                                const ValuesRef& y, int size, float* dz) {
  for (int k = 0; k < size; ++k) {
    dz[k] = dy[k] * ActivationDerivativeFromOutput(activation, y[k]);
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_FULLY_CONNECTED_H_
