// The three trainable linear layers (fully-connected, CONV_2D,
// DEPTHWISE_CONV_2D) as one layer type with a kind: forward, input gradient,
// weight gradient and the frozen int8 accumulator, dispatched to
// fully_connected.h / conv.h, plus the per-output steps after the linear map
// (bias, fused activation, activation mask).
#ifndef TFLM_OPS_REFERENCE_LINEAR_H_
#define TFLM_OPS_REFERENCE_LINEAR_H_

#include <cstdint>

#include "reference/conv.h"
#include "reference/fully_connected.h"
#include "reference/types.h"

namespace tflmt {
namespace reference {

// out (+)= the layer's linear map of x (float math, no bias or activation).
inline void LinearForward(LinearKind kind, const ConvGeometry& g,
                          const WeightsRef& w, const ValuesRef& x,
                          bool accumulate, float* out) {
  switch (kind) {
    case LinearKind::kFullyConnected:
      MatVecFloat(x, w, g.batches, g.in_c, g.out_c, accumulate, out);
      break;
    case LinearKind::kConv2D:
      ConvForward(x, w, g, accumulate, out);
      break;
    case LinearKind::kDepthwiseConv2D:
      DepthwiseForward(x, w, g, accumulate, out);
      break;
  }
}

// dx (+)= the linear map's transpose applied to dz.
inline void LinearInputGrad(LinearKind kind, const ConvGeometry& g,
                            const WeightsRef& w, const GradRows& dz,
                            bool accumulate, float* dx) {
  switch (kind) {
    case LinearKind::kFullyConnected:
      InputGrad(dz, w, g.batches, g.in_c, g.out_c, accumulate, dx);
      break;
    case LinearKind::kConv2D:
      ConvInputGrad(dz, w, g, accumulate, dx);
      break;
    case LinearKind::kDepthwiseConv2D:
      DepthwiseInputGrad(dz, w, g, accumulate, dx);
      break;
  }
}

// dw += the weight gradient.
inline void LinearWeightGrad(LinearKind kind, const ConvGeometry& g,
                             const GradRows& dz, const ValuesRef& x,
                             float* dw) {
  switch (kind) {
    case LinearKind::kFullyConnected:
      WeightGradAccumulate(dz, x, g.batches, g.in_c, g.out_c, dw);
      break;
    case LinearKind::kConv2D:
      ConvWeightGradAccumulate(dz, x, g, dw);
      break;
    case LinearKind::kDepthwiseConv2D:
      DepthwiseWeightGradAccumulate(dz, x, g, dw);
      break;
  }
}

// Integer accumulator of output (b, oy, ox, co) of a frozen int8 layer:
// sum of (x - x_zp) * w over what that output reads (no bias).
inline int32_t LinearAccumulatorInt8(LinearKind kind, const ConvGeometry& g,
                                     const int8_t* x, int32_t x_zero_point,
                                     const int8_t* w, int b, int oy, int ox,
                                     int co) {
  if (kind == LinearKind::kConv2D) {
    return ConvAccumulatorInt8(x, x_zero_point, w, g, b, oy, ox, co);
  }
  if (kind == LinearKind::kDepthwiseConv2D) {
    return DepthwiseAccumulatorInt8(x, x_zero_point, w, g, b, oy, ox, co);
  }
  int32_t acc = 0;
  AccumulateInt8(x + b * g.in_c, x_zero_point, w + co * g.in_c, nullptr, 1,
                 g.in_c, 1, &acc);
  return acc;
}

// out[p, c] += bias[c] over `pixels` rows of `channels`.
inline void AddBias(const float* bias, int pixels, int channels, float* out) {
  for (int p = 0; p < pixels; ++p) {
    for (int c = 0; c < channels; ++c) out[p * channels + c] += bias[c];
  }
}

inline void ApplyActivationInPlace(Activation activation, int n, float* out) {
  for (int i = 0; i < n; ++i) out[i] = ApplyActivation(activation, out[i]);
}

// Bit i of the activation mask: set where the activation's derivative at
// output value y is 1 (clamping activations only).
inline void SetMaskBit(uint8_t* mask, int i, Activation activation, float y) {
  const uint8_t bit = static_cast<uint8_t>(1u << (i & 7));
  if (ActivationDerivativeFromOutput(activation, y) != 0.0f) {
    mask[i >> 3] |= bit;
  } else {
    mask[i >> 3] &= static_cast<uint8_t>(~bit);
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_LINEAR_H_
