// Integer-only arithmetic for integer training (--arithmetic int8): 64-bit
// rescaling by a fixed-point multiplier, an integer log2, IEEE-754 float32
// bits read and written with integer operations (the model's learning-rate
// input and loss output stay float32 tensors, but no float arithmetic runs),
// and a stateless integer hash for stochastic rounding.
//
// Nothing here uses float or double: the Cortex-M0+ check (tests/
// test_integer_m0plus.py) proves it on the object files. tests/int_reference.py
// is the bit-exact NumPy/Python twin of every function.
#ifndef TFLM_OPS_REFERENCE_FIXED_POINT_H_
#define TFLM_OPS_REFERENCE_FIXED_POINT_H_

#include <cstdint>

namespace tflmt {
namespace reference {

// real = multiplier * 2^(shift - 31); the converter computes it from the
// (float) scales, so the kernels never see a float scale.
struct QMult {
  int32_t multiplier = 0;
  int32_t shift = 0;
};

constexpr int64_t kInt64Max = 0x7FFFFFFFFFFFFFFFLL;

// x / 2^n rounded half away from zero, for 0 <= n <= 62. Without a branch
// on the sign: for x < 0, -((-x + half) >> n) == (x + half - 1) >> n
// (arithmetic shift = floor).
inline int64_t RoundShift(int64_t x, int n) {
  if (n <= 0) return x;
  const int64_t half = int64_t{1} << (n - 1);
  return (x + half - (x < 0 ? 1 : 0)) >> n;
}

// Number of significant bits of a magnitude (0 for 0): one count-leading-
// zeros (an instruction, or libgcc's integer __clzdi2 on ARMv6-M) instead
// of a loop over the bits - it runs once per gradient element.
inline int BitLength(uint64_t magnitude) {
#if defined(__GNUC__) || defined(__clang__)
  return magnitude == 0 ? 0 : 64 - __builtin_clzll(magnitude);
#else
  int bits = 0;
  while (magnitude != 0) {
    magnitude >>= 1;
    ++bits;
  }
  return bits;
#endif
}

// |x| as an unsigned value (also for INT64_MIN).
inline uint64_t Magnitude(int64_t x) {
  return x >= 0 ? static_cast<uint64_t>(x) : static_cast<uint64_t>(-(x + 1)) + 1;
}

// x * real(q) * 2^extra_shift, rounded half away from zero, saturating at the
// int64 range. x is first reduced to 31 bits (one rounding) so that the
// product fits 64 bits; `extra_shift` carries a tensor's power-of-two
// exponent (gradients travel as int16 values with such an exponent).
inline int64_t Rescale(int64_t x, QMult q, int extra_shift = 0) {
  if (q.multiplier == 0 || x == 0) return 0;
  const int bits = BitLength(Magnitude(x));
  const int reduce = bits > 31 ? bits - 31 : 0;
  const int64_t reduced = RoundShift(x, reduce);
  const int64_t product = reduced * static_cast<int64_t>(q.multiplier);
  const int right = 31 - q.shift - extra_shift - reduce;
  if (right > 62) return 0;
  if (right >= 0) return RoundShift(product, right);
  const int left = -right;
  const int64_t limit = left >= 62 ? 0 : (kInt64Max >> left);
  if (product > limit) return kInt64Max;
  if (product < -limit) return -kInt64Max;
  return product * (int64_t{1} << left);
}

// Rescale(x, q, extra_shift) for many x with the same q and extra_shift
// (one tensor's gradient elements in one sample): the shift is worked out
// once, and an x that already fits 31 bits - the common case - skips the
// reduction. The results are Rescale's, bit for bit.
class Rescaler {
 public:
  Rescaler(QMult q, int extra_shift)
      : q_(q), extra_shift_(extra_shift), right_(31 - q.shift - extra_shift),
        direct_(q.multiplier != 0 && right_ >= 0 && right_ <= 62) {}

  // True when x * multiplier, rounded-shifted right, is Rescale(x) for
  // every |x| < 2^31 (then Direct may be used).
  bool direct() const { return direct_; }
  int right() const { return right_; }
  int64_t multiplier() const { return q_.multiplier; }

  int64_t operator()(int64_t x) const {
    if (direct_ && x > -kLimit && x < kLimit) return RoundShift(x * q_.multiplier, right_);
    return Rescale(x, q_, extra_shift_);
  }
  // Rescale(x) from x * multiplier, for |x| < 2^31 when direct().
  int64_t FromProduct(int64_t x_times_multiplier) const {
    return RoundShift(x_times_multiplier, right_);
  }

 private:
  static constexpr int64_t kLimit = int64_t{1} << 31;
  QMult q_;
  int extra_shift_;
  int right_;
  bool direct_;
};

inline int32_t SaturateInt32(int64_t v) {
  return v > 2147483647LL ? 2147483647
                          : (v < -2147483647LL ? -2147483647
                                               : static_cast<int32_t>(v));
}
inline int16_t SaturateInt16(int64_t v) {
  return static_cast<int16_t>(v > 32767 ? 32767 : (v < -32767 ? -32767 : v));
}

// log2(1 + i / 32) * 2^16, i = 0..32 (tests/int_reference.py checks it).
constexpr int32_t kLog2Table[33] = {
    0,     2909,  5732,  8473,  11136, 13727, 16248, 18704, 21098,
    23433, 25711, 27936, 30109, 32234, 34312, 36346, 38336, 40286,
    42196, 44068, 45904, 47705, 49472, 51207, 52911, 54584, 56229,
    57845, 59434, 60997, 62534, 64047, 65536};

// log2(x) * 2^16 for x >= 1 (table with linear interpolation, error
// below 2^-9): the exponent from the leading bit, the fraction from the table.
inline int32_t Log2Q16(uint32_t x) {
  if (x == 0) return 0;
  const int msb = BitLength(x) - 1;
  // Mantissa in [2^30, 2^31): fraction = mantissa - 2^30 in 30 bits.
  const uint32_t mantissa = msb <= 30 ? x << (30 - msb) : x >> (msb - 30);
  const uint32_t fraction = mantissa - (1u << 30);
  const uint32_t index = fraction >> 25;
  const int64_t rest = static_cast<int64_t>(fraction & ((1u << 25) - 1));
  const int64_t step = kLog2Table[index + 1] - kLog2Table[index];
  return msb * 65536 + kLog2Table[index] +
         static_cast<int32_t>((step * rest) >> 25);
}

// ln(2) * 2^16.
constexpr int32_t kLn2Q16 = 45426;

// The float32 bits of value / 2^16 for value >= 0 (truncated to 24
// significant bits): how the loss reaches the model's float32 output.
inline uint32_t FloatBitsFromQ16(uint32_t value) {
  if (value == 0) return 0;
  const int msb = BitLength(value) - 1;
  const uint32_t mantissa = msb >= 23 ? value >> (msb - 23) : value << (23 - msb);
  const uint32_t exponent = static_cast<uint32_t>(msb - 16 + 127);
  return (exponent << 23) | (mantissa & 0x7FFFFFu);
}
constexpr uint32_t kFloatQuietNan = 0x7FC00000u;

// A non-negative finite float32 (given as bits) * 2^24, truncated and
// saturated at 2^31 - 1; -1 for a negative value, NaN or infinity. The
// learning rate arrives as float32; the optimizer needs it in fixed point.
inline int32_t Q24FromFloatBits(uint32_t bits) {
  if (bits == 0 || bits == 0x80000000u) return 0;
  if ((bits >> 31) != 0) return -1;
  const int exponent = static_cast<int>((bits >> 23) & 0xFF);
  if (exponent == 0xFF) return -1;
  if (exponent == 0) return 0;  // subnormal: far below 2^-24
  const uint32_t mantissa = (bits & 0x7FFFFFu) | 0x800000u;
  // value = mantissa * 2^(exponent - 150); * 2^24 -> shift by exponent - 126.
  const int shift = exponent - 126;
  if (shift >= 8) return 2147483647;  // >= 2^7: saturated
  if (shift >= 0) return static_cast<int32_t>(mantissa << shift);
  if (shift <= -24) return 0;
  return static_cast<int32_t>(mantissa >> (-shift));
}

// A well-mixed 32-bit value of (seed, step, index), without state: the
// stochastic rounding of parameter `index` at optimizer step `step`.
// (MurmurHash3's finalizer over a simple combination.)
inline uint32_t HashRandom(uint32_t seed, uint32_t step, uint32_t index) {
  uint32_t h = seed ^ (step * 0x9E3779B9u) ^ (index * 0x85EBCA6Bu);
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_FIXED_POINT_H_
