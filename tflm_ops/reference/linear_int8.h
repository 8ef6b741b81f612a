// The exact int8 forward of a linear layer whose frozen weights, input and
// output are int8: the int32 accumulator as TFLM's reference kernels compute
// it, plus the trainable float terms (bias, LoRA) converted to accumulator
// units, then requantized per output channel. With no trainable term (or
// B = 0) the bytes equal the stock kernel's.
#ifndef TFLM_OPS_REFERENCE_LINEAR_INT8_H_
#define TFLM_OPS_REFERENCE_LINEAR_INT8_H_

#include <cmath>
#include <cstdint>

#include "reference/linear.h"
#include "reference/lora.h"
#include "reference/quantization.h"
#include "reference/types.h"

namespace tflmt {
namespace reference {

// Per output channel: accumulator -> output, and the clamp of the activation.
struct Int8Requantization {
  const int32_t* multipliers = nullptr;
  const int* shifts = nullptr;
  const float* accumulator_scales = nullptr;  // input scale * weight scale
  float output_scale = 1.0f;
  int32_t output_zero_point = 0;
  int32_t act_min = -128;
  int32_t act_max = 127;
};

// What is added to the accumulator besides x * w.
struct Int8LayerTerms {
  const int32_t* frozen_bias = nullptr;   // int32, accumulator units, or null
  const float* trainable_bias = nullptr;  // float32, or null
  LoraParams lora;                        // rank 0: no LoRA
  const LoraHiddenRows* hidden = nullptr;  // FC / conv LoRA: h rows
  const float* delta = nullptr;           // depthwise LoRA: filter delta
  ValuesRef x;                            // x's real values (depthwise LoRA)
};

// y = requantize(acc + frozen bias + round(terms / accumulator scale)),
// clamped; when `mask` is not null its bit per output is set as well.
inline void LinearForwardExactInt8(LinearKind kind, const ConvGeometry& g,
                                   Activation activation, const int8_t* x,
                                   int32_t x_zero_point, const int8_t* w,
                                   const Int8LayerTerms& terms,
                                   const Int8Requantization& rq, int8_t* y,
                                   uint8_t* mask) {
  const bool has_terms = terms.trainable_bias != nullptr || terms.lora.rank > 0;
  for (int b = 0; b < g.batches; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        const int pixel = (b * g.out_h + oy) * g.out_w + ox;
        const float* h = terms.hidden != nullptr ? terms.hidden->Row(pixel) : nullptr;
        for (int co = 0; co < g.out_c; ++co) {
          int32_t acc = LinearAccumulatorInt8(kind, g, x, x_zero_point, w, b,
                                              oy, ox, co);
          if (terms.frozen_bias != nullptr) acc += terms.frozen_bias[co];
          if (has_terms) {
            float term = terms.trainable_bias != nullptr ? terms.trainable_bias[co] : 0.0f;
            if (h != nullptr) {
              float sum = 0.0f;
              for (int k = 0; k < terms.lora.rank; ++k) {
                sum += terms.lora.b[co * terms.lora.rank + k] * h[k];
              }
              term += terms.lora.scale * sum;
            } else if (terms.delta != nullptr) {
              term += DepthwiseOutputAt(terms.x, terms.delta, g, b, oy, ox, co);
            }
            // The term in accumulator units; acc is an integer, so rounding
            // the term rounds the sum.
            acc = SaturatingAdd(acc, std::round(term / rq.accumulator_scales[co]));
          }
          int32_t out = MultiplyByQuantizedMultiplier(acc, rq.multipliers[co],
                                                      rq.shifts[co]) +
                        rq.output_zero_point;
          out = out < rq.act_min ? rq.act_min : (out > rq.act_max ? rq.act_max : out);
          y[pixel * g.out_c + co] = static_cast<int8_t>(out);
          if (mask != nullptr) {
            SetMaskBit(mask, pixel * g.out_c + co, activation,
                       rq.output_scale * static_cast<float>(out - rq.output_zero_point));
          }
        }
      }
    }
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_LINEAR_INT8_H_
