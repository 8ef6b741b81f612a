// LoRA on a linear layer (peft's layout: A [rank, ...], B [out_c, rank],
// delta W = scale * B A), forward and backward.
//
//   FC / CONV_2D:       y += scale * B h,  h = conv_A(x)   A [r, k_h, k_w, in_c]
//                       (A is a layer of the same geometry with r outputs)
//   DEPTHWISE_CONV_2D:  y += depthwise(x, delta),  delta = scale * B A
//                       A [r, k_h * k_w], delta laid out [k_h, k_w, out_c]
#ifndef TFLM_OPS_REFERENCE_LORA_H_
#define TFLM_OPS_REFERENCE_LORA_H_

#include "reference/conv.h"
#include "reference/linear.h"
#include "reference/types.h"

namespace tflmt {
namespace reference {

struct LoraParams {
  int rank = 0;
  float scale = 0.0f;
  const float* a = nullptr;
  const float* b = nullptr;  // [out_c, rank]
};

struct LoraGrads {
  float* a = nullptr;
  float* b = nullptr;
};

// LoRA's A branch (FC / CONV_2D): the layer's geometry with `rank` outputs.
inline ConvGeometry LoraAGeometry(const ConvGeometry& g, int rank) {
  ConvGeometry a = g;
  a.out_c = rank;
  return a;
}

// The low-rank output map at one output position (row):
//   out[o] += scale * sum_k B[o, k] h[k]
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

// h = conv_A(x) at every output position (FC / CONV_2D), [pixels, rank].
inline void LoraHiddenForward(LinearKind kind, const ConvGeometry& g,
                              const LoraParams& lora, const ValuesRef& x,
                              float* hidden) {
  WeightsRef a;
  a.f32 = lora.a;
  LinearForward(kind, LoraAGeometry(g, lora.rank), a, x, /*accumulate=*/false,
                hidden);
}

// LoRA's hidden h (FC / CONV_2D), one output position at a time. Read from
// the tensor the forward op kept for the backward op, or, where the converter
// chose not to keep it, recomputed from x (which A's gradient reads anyway):
// rank * taps * in_c multiply-adds per position, rank/out_c of the layer's
// own work, instead of pixels * rank floats of arena held from the forward op
// to the backward op.
struct LoraHiddenRows {
  ConvGeometry a_geometry;      // the A branch: out_c = rank
  const float* kept = nullptr;  // [pixels, rank], or null: recompute
  const float* a = nullptr;     // LoRA A, for recomputing
  ValuesRef x;                  // the layer's input, for recomputing
  float* row = nullptr;         // rank floats of scratch, for recomputing

  const float* Row(int pixel) const {
    const int rank = a_geometry.out_c;
    if (kept != nullptr) return kept + pixel * rank;
    const ConvGeometry& g = a_geometry;  // FC: 1x1 over rows
    const int per_batch = g.out_h * g.out_w;
    const int b = pixel / per_batch;
    const int oy = (pixel % per_batch) / g.out_w;
    const int ox = pixel % g.out_w;
    WeightsRef a_ref;
    a_ref.f32 = a;
    for (int k = 0; k < rank; ++k) {
      row[k] = ConvOutputAt(x, a_ref, g, b, oy, ox, k);
    }
    return row;
  }
};

// out[p] += scale * B h[p] at every output position (FC / CONV_2D).
inline void LoraForwardAccumulate(const ConvGeometry& g, const LoraParams& lora,
                                  const LoraHiddenRows& hidden, float* out) {
  const int pixels = g.out_pixels();
  for (int p = 0; p < pixels; ++p) {
    LowRankForwardRow(hidden.Row(p), lora.b, lora.scale, g.out_c, lora.rank,
                      out + p * g.out_c);
  }
}

// Depthwise: the filter delta scale * B A, laid out like a depthwise filter
// [k_h, k_w, out_c] (k_h * k_w * out_c floats).
inline void DepthwiseLoraDelta(const ConvGeometry& g, const LoraParams& lora,
                               float* delta) {
  const int taps = g.k_h * g.k_w, out_c = g.out_c, rank = lora.rank;
  for (int t = 0; t < taps; ++t) {
    for (int oc = 0; oc < out_c; ++oc) {
      float sum = 0.0f;
      for (int k = 0; k < rank; ++k) sum += lora.b[oc * rank + k] * lora.a[k * taps + t];
      delta[t * out_c + oc] = lora.scale * sum;
    }
  }
}

// Backward for FC / CONV_2D: through B (1x1), then A (the layer's shape).
// dh is scratch [pixels, rank]; dx (or null) accumulates A's input gradient.
inline void LoraBackward(LinearKind kind, const ConvGeometry& g,
                         const LoraParams& lora, const GradRows& dz,
                         const ValuesRef& x, const LoraHiddenRows& hidden,
                         float* dh, const LoraGrads& grads, float* dx) {
  const int pixels = g.out_pixels();
  for (int p = 0; p < pixels; ++p) {
    LowRankBackwardRow(dz.Row(p), hidden.Row(p), lora.b, lora.scale, g.out_c,
                       lora.rank, grads.b, dh + p * lora.rank);
  }
  const ConvGeometry a_geometry = LoraAGeometry(g, lora.rank);
  const GradRows dh_rows = GradRows::Plain(dh, lora.rank);
  LinearWeightGrad(kind, a_geometry, dh_rows, x, grads.a);
  if (dx != nullptr) {
    WeightsRef a;
    a.f32 = lora.a;
    LinearInputGrad(kind, a_geometry, a, dh_rows, /*accumulate=*/true, dx);
  }
}

// Backward for DEPTHWISE_CONV_2D: the filter delta's gradient, then through
// delta = scale B A to A and B. `scratch` holds 2 * k_h * k_w * out_c floats;
// dx (or null) accumulates the delta filter's input gradient.
inline void DepthwiseLoraBackward(const ConvGeometry& g, const LoraParams& lora,
                                  const GradRows& dz, const ValuesRef& x,
                                  float* scratch, const LoraGrads& grads,
                                  float* dx) {
  const int taps = g.k_h * g.k_w, out_c = g.out_c, rank = lora.rank;
  const int filter_values = taps * out_c;
  float* delta = scratch;
  float* delta_grad = scratch + filter_values;
  for (int i = 0; i < filter_values; ++i) delta_grad[i] = 0.0f;
  DepthwiseWeightGradAccumulate(dz, x, g, delta_grad);
  for (int t = 0; t < taps; ++t) {
    for (int oc = 0; oc < out_c; ++oc) {
      const float grad = lora.scale * delta_grad[t * out_c + oc];
      if (grad == 0.0f) continue;
      for (int k = 0; k < rank; ++k) {
        grads.b[oc * rank + k] += grad * lora.a[k * taps + t];
        grads.a[k * taps + t] += grad * lora.b[oc * rank + k];
      }
    }
  }
  if (dx != nullptr) {
    DepthwiseLoraDelta(g, lora, delta);
    WeightsRef delta_ref;
    delta_ref.f32 = delta;
    DepthwiseInputGrad(dz, delta_ref, g, /*accumulate=*/true, dx);
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_LORA_H_
