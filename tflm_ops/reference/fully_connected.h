// Fully-connected forward and backward math on raw pointers.
//
// Layouts follow TFLite: weights [units, in_features] row-major, inputs
// [batches, in_features], outputs [batches, units]. LoRA matrices follow peft:
// A [rank, in_features], B [units, rank], delta W = scale * B * A.
// "Accumulate" functions add into their output so that gradients of a batch,
// or of several samples, sum without a scratch copy.
#ifndef TFLM_OPS_REFERENCE_FULLY_CONNECTED_H_
#define TFLM_OPS_REFERENCE_FULLY_CONNECTED_H_

#include <cstdint>

#include "reference/quantization.h"

namespace tflmt {
namespace reference {

// How to read a frozen weight matrix: float, or int8 with per-channel
// (per output unit) or per-tensor scales and zero point 0.
struct WeightsRef {
  const float* f32 = nullptr;
  const int8_t* i8 = nullptr;
  const float* channel_scales = nullptr;  // one per unit, or null
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

// LoRA's low-rank output map at one output position (row):
//   out[o] += scale * sum_k B[o, k] h[k]          (B [units, rank])
inline void LowRankForwardRow(const float* h, const float* b_mat, float scale,
                              int units, int rank, float* out) {
  for (int o = 0; o < units; ++o) {
    float sum = 0.0f;
    for (int k = 0; k < rank; ++k) sum += b_mat[o * rank + k] * h[k];
    out[o] += scale * sum;
  }
}

// Its backward at the same row, given dz there (the pre-activation gradient):
//   dB += scale * dz h^T;   dh = scale * B^T dz
inline void LowRankBackwardRow(const float* dz, const float* h,
                               const float* b_mat, float scale, int units,
                               int rank, float* db_mat, float* dh) {
  for (int k = 0; k < rank; ++k) dh[k] = 0.0f;
  for (int o = 0; o < units; ++o) {
    const float g = scale * dz[o];
    if (g == 0.0f) continue;
    for (int k = 0; k < rank; ++k) {
      db_mat[o * rank + k] += g * h[k];
      dh[k] += g * b_mat[o * rank + k];
    }
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_FULLY_CONNECTED_H_
