// Fixed-point requantization, numerically the same as TFLM's reference int8
// kernels (so a frozen int8 layer run by our kernels gives the same bytes as
// the stock kernel), plus float helpers for dequantizing in backward ops.
#ifndef TFLM_OPS_REFERENCE_QUANTIZATION_H_
#define TFLM_OPS_REFERENCE_QUANTIZATION_H_

#include <cmath>
#include <cstdint>
#include <limits>

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

// Fused activations as TFLite numbers them (ActivationFunctionType).
enum class Activation : int {
  kNone = 0,
  kRelu = 1,
  kReluN1To1 = 2,
  kRelu6 = 3,
  kTanh = 4,
  kLogistic = 100,  // not a fused activation; used by the activation grad op
};

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
      return std::tanh(x);
    case Activation::kLogistic:
      return 1.0f / (1.0f + std::exp(-x));
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

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_QUANTIZATION_H_
