// Fixed-point requantization, numerically the same as TFLM's reference int8
// kernels (so a frozen int8 layer run by our kernels gives the same bytes as
// the stock kernel), plus float helpers for dequantizing in backward ops.
#ifndef TFLM_OPS_REFERENCE_QUANTIZATION_H_
#define TFLM_OPS_REFERENCE_QUANTIZATION_H_

#include <cmath>
#include <cstdint>
#include <limits>

#include "reference/types.h"

namespace tflmt {
namespace reference {

// real_multiplier = quantized_multiplier * 2^(shift - 31), with the
// multiplier in [2^30, 2^31).
inline void QuantizeMultiplier(double real_multiplier,
                               int32_t* quantized_multiplier, int* shift) {
  if (real_multiplier == 0.0) {
    *quantized_multiplier = 0;
    *shift = 0;
    return;
  }
  const double fraction = std::frexp(real_multiplier, shift);
  int64_t fixed = static_cast<int64_t>(std::round(fraction * (1LL << 31)));
  if (fixed == (1LL << 31)) {
    fixed /= 2;
    ++*shift;
  }
  if (*shift < -31) {
    *shift = 0;
    fixed = 0;
  }
  if (*shift > 30) {
    *shift = 30;
    fixed = (1LL << 31) - 1;
  }
  *quantized_multiplier = static_cast<int32_t>(fixed);
}

// (a * b * 2) / 2^32 rounded half away from zero, saturating the one overflow.
inline int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min()) {
    return std::numeric_limits<int32_t>::max();
  }
  const int64_t product = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = product >= 0 ? (1LL << 30) : (1 - (1LL << 30));
  return static_cast<int32_t>((product + nudge) / (1LL << 31));
}

// x / 2^exponent rounded half away from zero.
inline int32_t RoundingDivideByPOT(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((1LL << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier,
                                             int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  return RoundingDivideByPOT(
      SaturatingRoundingDoublingHighMul(
          static_cast<int32_t>(static_cast<int64_t>(x) * (1LL << left_shift)),
          multiplier),
      right_shift);
}

// acc + term for a whole-valued float term, saturating at the int32 range.
inline int32_t SaturatingAdd(int32_t acc, float term) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int32_t>::min();
  if (term >= 4294967296.0f) return static_cast<int32_t>(kMax);
  if (term <= -4294967296.0f) return static_cast<int32_t>(kMin);
  const int64_t sum = acc + static_cast<int64_t>(term);
  return static_cast<int32_t>(sum > kMax ? kMax : (sum < kMin ? kMin : sum));
}

// zero_point + round(value / scale), clamped to [qmin, qmax]: TFLM's QUANTIZE
// convention (float division, round half away from zero). NaN gives qmin.
inline int32_t QuantizeValue(float value, float scale, int32_t zero_point,
                             int32_t qmin, int32_t qmax) {
  float steps = std::round(value / scale);
  // Clamp in float first: far out of range (or NaN) must not reach the cast.
  if (!(steps >= -65536.0f)) steps = -65536.0f;
  if (steps > 65536.0f) steps = 65536.0f;
  const int32_t q = zero_point + static_cast<int32_t>(steps);
  return q < qmin ? qmin : (q > qmax ? qmax : q);
}

// Clamp range of a fused activation in the quantized output domain.
inline void QuantizedActivationRange(Activation activation, float scale,
                                     int32_t zero_point, int32_t qmin,
                                     int32_t qmax, int32_t* act_min,
                                     int32_t* act_max) {
  *act_min = qmin;
  *act_max = qmax;
  auto quantize = [&](float v) {
    return zero_point + static_cast<int32_t>(std::round(v / scale));
  };
  if (activation == Activation::kRelu) {
    *act_min = quantize(0.0f) > qmin ? quantize(0.0f) : qmin;
  } else if (activation == Activation::kRelu6) {
    *act_min = quantize(0.0f) > qmin ? quantize(0.0f) : qmin;
    *act_max = quantize(6.0f) < qmax ? quantize(6.0f) : qmax;
  } else if (activation == Activation::kReluN1To1) {
    *act_min = quantize(-1.0f) > qmin ? quantize(-1.0f) : qmin;
    *act_max = quantize(1.0f) < qmax ? quantize(1.0f) : qmax;
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_QUANTIZATION_H_
