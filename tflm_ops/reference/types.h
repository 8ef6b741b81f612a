// Types the reference math shares: how values and weights are read (float32
// or quantized, in place), the gradient rows backward loops consume, the
// geometry of a convolution or pool window, and shapes of shape-only ops.
//
// The two enums here are also written by the converter (converter/constants.py;
// tests/test_constants.py keeps them equal). The per-element activation rules
// live here too, because GradRows applies them.
#ifndef TFLM_OPS_REFERENCE_TYPES_H_
#define TFLM_OPS_REFERENCE_TYPES_H_

#include <cstdint>

#include "reference/math.h"

namespace tflmt {
namespace reference {

// Fused activations as TFLite numbers them (ActivationFunctionType).
enum class Activation : int {
  kNone = 0,
  kRelu = 1,
  kReluN1To1 = 2,
  kRelu6 = 3,
  kTanh = 4,
  kLogistic = 100,  // not a fused activation; used by the activation grad op
};

// The three trainable linear layers; a fully-connected layer is a 1x1
// convolution over its rows.
enum class LinearKind : uint8_t {
  kFullyConnected = 0,
  kConv2D = 1,
  kDepthwiseConv2D = 2,
};

// Clamping activations have a derivative of 0 or 1, so their backward pass
// needs one bit per output, not the output.
inline bool HasMaskDerivative(Activation activation) {
  return activation == Activation::kRelu || activation == Activation::kRelu6 ||
         activation == Activation::kReluN1To1;
}

inline float ApplyActivation(Activation activation, float x) {
  switch (activation) {
    case Activation::kRelu:
      return x > 0.0f ? x : 0.0f;
    case Activation::kRelu6:
      return x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
    case Activation::kReluN1To1:
      return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
    case Activation::kTanh:
      return Tanh(x);
    case Activation::kLogistic:
      return Logistic(x);
    default:
      return x;
  }
}

// d activation / d input, written in terms of the activation's output y
// (which is what the forward pass keeps). Clamping activations pass the
// gradient where the output is strictly inside the clamp range; at a clamp
// edge the gradient is zero, the convention TensorFlow uses for relu's 0.
inline float ActivationDerivativeFromOutput(Activation activation, float y) {
  switch (activation) {
    case Activation::kRelu:
      return y > 0.0f ? 1.0f : 0.0f;
    case Activation::kRelu6:
      return (y > 0.0f && y < 6.0f) ? 1.0f : 0.0f;
    case Activation::kReluN1To1:
      return (y > -1.0f && y < 1.0f) ? 1.0f : 0.0f;
    case Activation::kTanh:
      return 1.0f - y * y;
    case Activation::kLogistic:
      return y * (1.0f - y);
    default:
      return 1.0f;
  }
}

// How to read a frozen weight tensor: float, or int8 with per-channel (per
// output channel) or per-tensor scales and zero point 0.
struct WeightsRef {
  const float* f32 = nullptr;
  const int8_t* i8 = nullptr;
  const float* channel_scales = nullptr;  // one per output channel, or null
  float scale = 1.0f;                     // per-tensor scale otherwise

  float Scale(int unit) const {
    return channel_scales != nullptr ? channel_scales[unit] : scale;
  }
  float At(int unit, int in_features, int i) const {
    const int index = unit * in_features + i;
    return f32 != nullptr ? f32[index] : Scale(unit) * i8[index];
  }
};

// Real values of an activation tensor, read where they are stored: float32,
// or int8 / int16 dequantized one element at a time. Training kernels read
// int8 activations through this instead of keeping a float copy (4x the
// bytes) in the arena.
struct ValuesRef {
  const float* f32 = nullptr;
  const int8_t* i8 = nullptr;
  const int16_t* i16 = nullptr;
  float scale = 1.0f;
  int32_t zero_point = 0;

  ValuesRef() = default;
  ValuesRef(const float* values) : f32(values) {}  // NOLINT: float data reads as is
  float operator[](int i) const {
    if (f32 != nullptr) return f32[i];
    const int32_t q = i8 != nullptr ? i8[i] : i16[i];
    return scale * static_cast<float>(q - zero_point);
  }
  ValuesRef Offset(int n) const {
    ValuesRef v = *this;
    if (v.f32 != nullptr) v.f32 += n;
    if (v.i8 != nullptr) v.i8 += n;
    if (v.i16 != nullptr) v.i16 += n;
    return v;
  }
};

// The gradient at a layer's pre-activation output, one output position (row
// of `channels` values) at a time, made on the fly from what the pass has:
//   dz = dy * activation'(y)
// where dy is either one value per output (plain) or, after a global
// average pool / MEAN, one per batch and channel (pooled: dy / positions).
// Backward loops read rows through this, so neither dz nor a pooled
// gradient spread over the feature map is ever stored in the arena.
struct GradRows {
  const float* dy = nullptr;
  int channels = 0;
  Activation activation = Activation::kNone;
  ValuesRef y;                   // the layer's output, when activation is set
  const uint8_t* mask = nullptr;  // or, for clamps, a bit per output: derivative 1
  int positions_per_batch = 0;   // > 0: dy is pooled over this many positions
  float* row = nullptr;          // `channels` floats of scratch, when needed

  static GradRows Plain(const float* values, int channels) {
    GradRows rows;
    rows.dy = values;
    rows.channels = channels;
    return rows;
  }
  bool stored() const {
    return activation == Activation::kNone && mask == nullptr &&
           positions_per_batch == 0;
  }
  // dz of output position p (a pointer into dy, or into `row`).
  const float* Row(int p) const {
    if (stored()) return dy + p * channels;
    const float* source = dy;
    float scale = 1.0f;
    if (positions_per_batch > 0) {
      source = dy + (p / positions_per_batch) * channels;
      scale = 1.0f / static_cast<float>(positions_per_batch);
    } else {
      source = dy + p * channels;
    }
    for (int c = 0; c < channels; ++c) {
      const int i = p * channels + c;
      float derivative = 1.0f;
      if (mask != nullptr) {
        derivative = (mask[i >> 3] >> (i & 7)) & 1u ? 1.0f : 0.0f;
      } else if (activation != Activation::kNone) {
        derivative = ActivationDerivativeFromOutput(activation, y[i]);
      }
      row[c] = source[c] * scale * derivative;
    }
    return row;
  }
};

// Sizes and window of a 2-D convolution, depthwise convolution or pool on
// NHWC tensors (a fully-connected layer: 1x1 over rows, in_h = in_w = 1).
struct ConvGeometry {
  int batches = 1;
  int in_h = 0, in_w = 0, in_c = 0;
  int out_h = 0, out_w = 0, out_c = 0;
  int k_h = 1, k_w = 1;
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  int pad_top = 0, pad_left = 0;
  int depth_multiplier = 1;  // depthwise only: out_c = in_c * depth_multiplier

  int in_pixels() const { return batches * in_h * in_w; }
  int out_pixels() const { return batches * out_h * out_w; }
  // Input row/column that kernel tap (ky, kx) of output (oy, ox) reads.
  int InY(int oy, int ky) const { return oy * stride_h - pad_top + ky * dilation_h; }
  int InX(int ox, int kx) const { return ox * stride_w - pad_left + kx * dilation_w; }
  bool Inside(int y, int x) const { return y >= 0 && y < in_h && x >= 0 && x < in_w; }
};

// A row-major shape of up to six dimensions (unused trailing dims are 1).
constexpr int kMaxDims = 6;

struct Dims {
  int rank = 0;
  int d[kMaxDims] = {1, 1, 1, 1, 1, 1};

  int Size() const {
    int n = 1;
    for (int i = 0; i < rank; ++i) n *= d[i];
    return n;
  }
};

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_TYPES_H_
