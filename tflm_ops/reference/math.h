// Elementary functions computed the same way on every target.
//
// C libraries differ in the last bits (newlib's expf on a Cortex-M4F is not
// glibc's on x86), so a model trained on a device would drift from the same
// model trained on the host. These are built only from IEEE-754 basic
// operations (+ - * / and comparisons, and exact bit manipulation of the
// exponent), which every conforming FPU and soft-float library rounds the
// same way; so are their results, as long as the compiler does not fuse a
// multiply and an add (this project builds with -std=c++17, where GCC does
// not contract; keep -ffp-contract=off with GNU dialects) and no fast-math
// flag is on. Accuracy, measured against float64 (tests/test_math.py): about
// 1-2 ulp over the float range.
//
// Float versions (Exp, Expm1, Log, Log1p, Tanh, Logistic) run per element
// on the FPU. Pow runs in double (soft-float on a Cortex-M4F, but it is
// called once per optimizer step) because exp(y log x) in float would lose
// |y log x| ulps.
#ifndef TFLM_OPS_REFERENCE_MATH_H_
#define TFLM_OPS_REFERENCE_MATH_H_

#include <cstdint>
#include <cstring>
#include <limits>

// Kept out of line: one copy per image (the linker folds the per-object
// copies of an inline function) instead of one per call site.
#if defined(__GNUC__)
#define TFLMT_MATH_NOINLINE __attribute__((noinline))
#else
#define TFLMT_MATH_NOINLINE
#endif

namespace tflmt {
namespace reference {
namespace math_internal {

// ln 2 split so that k * kLn2Hi is exact for |k| < 512.
constexpr float kLn2Hi = 6.93145751953125e-01f;   // 0x3f317200
constexpr float kLn2Lo = 1.428606765330187e-06f;  // ln 2 - kLn2Hi
constexpr float kInvLn2 = 1.44269504088896341f;
constexpr double kLn2HiD = 6.93147180369123816490e-01;  // 32 low bits zero
constexpr double kLn2LoD = 1.90821492927058770002e-10;
constexpr double kInvLn2D = 1.44269504088896338700e+00;

inline float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint32_t Bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}
inline double FromBits64(uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}
inline uint64_t Bits64(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  return bits;
}

// 2^k for a normal float exponent, k in [-126, 127] (exact).
inline float Pow2(int k) { return FromBits(static_cast<uint32_t>(k + 127) << 23); }
// 2^k for k in [-1022, 1023] (exact).
inline double Pow2D(int k) {
  return FromBits64(static_cast<uint64_t>(k + 1023) << 52);
}

// Nearest integer of v (halves away from zero), |v| < 2^30.
inline int RoundToInt(float v) {
  return static_cast<int>(v >= 0.0f ? v + 0.5f : v - 0.5f);
}
inline int RoundToIntD(double v) {
  return static_cast<int>(v >= 0.0 ? v + 0.5 : v - 0.5);
}

// e^r - 1 for |r| <= ~0.35: Taylor to r^8 (truncation < 2^-30 relative).
inline float Expm1Small(float r) {
  const float p =
      0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 +
      r * (1.0f / 5040 + r * (1.0f / 40320))))));
  return r + r * r * p;
}

// x * 2^k for a positive x in [0.5, 2] and any k (one rounding at most).
inline float Scale(float x, int k) {
  if (k > 127) return x * Pow2(127) * Pow2(k - 127);
  if (k < -126) return x * Pow2(k + 100) * Pow2(-100);  // first product exact
  return x * Pow2(k);
}
inline double ScaleD(double x, int k) {
  if (k > 1023) return x * Pow2D(1023) * Pow2D(k - 1023);
  if (k < -1022) return x * Pow2D(k + 600) * Pow2D(-600);
  return x * Pow2D(k);
}

// log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1] given exactly:
// 2 atanh(s), s = f / (2 + f), written as f - (f^2/2 - s (f^2/2 + R)) with
// R = 2 s^2/3 + 2 s^4/5 + ... (s^2 <= 0.0295). `k_ln2_lo` folds in the low
// part of e ln 2 at the same step.
inline float Log1pReduced(float f, float k_ln2_lo) {
  const float s = f / (2.0f + f);
  const float z = s * s;
  const float R = z * (2.0f / 3 + z * (2.0f / 5 + z * (2.0f / 7 + z * (2.0f / 9))));
  const float hfsq = 0.5f * f * f;
  return f - (hfsq - (s * (hfsq + R) + k_ln2_lo));
}

// num / (a + b) without the rounding of a + b (its error is recovered
// exactly with TwoSum and corrected for to first order).
inline float DivideBySum(float num, float a, float b) {
  const float sum = a + b;
  const float b_part = sum - a;
  const float error = (a - (sum - b_part)) + (b - b_part);
  const float q = num / sum;
  return q - q * (error / sum);
}

}  // namespace math_internal

TFLMT_MATH_NOINLINE inline float Exp(float x) {
  namespace mi = math_internal;
  if (x != x) return x;
  if (x > 88.72283935546875f) return std::numeric_limits<float>::infinity();
  if (x < -103.97208404541015625f) return 0.0f;
  // x = k ln2 + r, |r| <= ln2 / 2; e^x = 2^k (1 + expm1(r)).
  const int k = mi::RoundToInt(x * mi::kInvLn2);
  const float r = (x - static_cast<float>(k) * mi::kLn2Hi) -
                  static_cast<float>(k) * mi::kLn2Lo;
  return mi::Scale(1.0f + mi::Expm1Small(r), k);
}

// e^x - 1, accurate also where it is near 0.
TFLMT_MATH_NOINLINE inline float Expm1(float x) {
  namespace mi = math_internal;
  if (x != x) return x;
  const float ax = x < 0.0f ? -x : x;
  if (ax < 5.9604645e-08f) return x;  // 2^-24: e^x - 1 rounds to x
  if (ax <= 0.34657359f) return mi::Expm1Small(x);
  const int k = mi::RoundToInt(x * mi::kInvLn2);
  if (k < -24 || k > 24) return Exp(x) - 1.0f;  // the -1 (or the 1) vanishes
  const float r = (x - static_cast<float>(k) * mi::kLn2Hi) -
                  static_cast<float>(k) * mi::kLn2Lo;
  // 2^k (1 + p) - 1 = 2^k p + (2^k - 1); both terms exact for |k| <= 24.
  return mi::Pow2(k) * mi::Expm1Small(r) + (mi::Pow2(k) - 1.0f);
}

TFLMT_MATH_NOINLINE inline float Log(float x) {
  namespace mi = math_internal;
  if (x != x) return x;
  if (x < 0.0f) return std::numeric_limits<float>::quiet_NaN();
  if (x == 0.0f) return -std::numeric_limits<float>::infinity();
  if (x == std::numeric_limits<float>::infinity()) return x;
  int e = 0;
  if (x < 1.17549435e-38f) {  // subnormal: scale into the normal range
    x *= 8388608.0f;          // 2^23, exact
    e = -23;
  }
  const uint32_t bits = mi::Bits(x);
  e += static_cast<int>((bits >> 23) & 0xffu) - 127;
  float m = mi::FromBits((bits & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  if (m > 1.41421356f) {
    m *= 0.5f;  // [0.707, 1.414]: log(m) is small and f below is exact
    ++e;
  }
  const float k = static_cast<float>(e);
  return k * mi::kLn2Hi + mi::Log1pReduced(m - 1.0f, k * mi::kLn2Lo);
}

// log(1 + x), accurate also where x is near 0.
TFLMT_MATH_NOINLINE inline float Log1p(float x) {
  if (x != x) return x;
  // Near 0, x itself is the reduced argument (exact, no 1 + x rounding).
  if (x > -0.29289321f && x < 0.41421356f) {
    return math_internal::Log1pReduced(x, 0.0f);
  }
  const float u = 1.0f + x;
  if (u == std::numeric_limits<float>::infinity() || !(u > 0.0f)) return Log(u);
  // 1 + x = u + c exactly (TwoSum); log(u + c) = log(u) + c / u to first order.
  const float x_part = u - 1.0f;
  const float c = (1.0f - (u - x_part)) + (x - x_part);
  return Log(u) + c / u;
}

TFLMT_MATH_NOINLINE inline float Tanh(float x) {
  if (x != x) return x;
  const float ax = x < 0.0f ? -x : x;
  float t;
  if (ax < 2.44140625e-04f) {  // 2^-12: tanh x = x (1 - x^2/3) rounds to x
    return x;
  } else if (ax < 0.5f) {
    // Taylor series to x^19 (truncation < 2^-31 relative at 0.5).
    const float z = ax * ax;
    const float p =
        -0.333333333333f + z * (0.133333333333f + z * (-0.0539682539683f +
        z * (0.0218694885362f + z * (-0.00886323552990f + z * (0.00359212803657f +
        z * (-0.00145583438705f + z * (0.000590027440946f + z * -0.000239129114244f)))))));
    t = ax + ax * (z * p);
  } else if (ax > 9.1f) {  // 1 - tanh x < 2^-25: rounds to 1
    t = 1.0f;
  } else {
    const float em1 = Expm1(2.0f * ax);  // tanh = (e^2x - 1) / (e^2x + 1)
    t = math_internal::DivideBySum(em1, em1, 2.0f);
  }
  return x < 0.0f ? -t : t;
}

// 1 / (1 + e^-x), from the side where e^.. <= 1.
TFLMT_MATH_NOINLINE inline float Logistic(float x) {
  if (x != x) return x;
  if (x >= 0.0f) return math_internal::DivideBySum(1.0f, 1.0f, Exp(-x));
  const float e = Exp(x);
  return math_internal::DivideBySum(e, 1.0f, e);
}

// ---- double precision, for Pow ---------------------------------------------------
inline double ExpD(double x) {
  namespace mi = math_internal;
  if (x != x) return x;
  if (x > 709.782712893384) return std::numeric_limits<double>::infinity();
  if (x < -745.1332191019412) return 0.0;
  const int k = mi::RoundToIntD(x * mi::kInvLn2D);
  const double r = (x - k * mi::kLn2HiD) - k * mi::kLn2LoD;  // |r| <= 0.35
  // e^r - 1 by Taylor to r^13 (truncation < 2^-60 relative).
  double p = 1.0 / 6227020800.0;  // 1/13!
  const double inverse_factorials[] = {1.0 / 479001600.0, 1.0 / 39916800.0,
                                       1.0 / 3628800.0,   1.0 / 362880.0,
                                       1.0 / 40320.0,     1.0 / 5040.0,
                                       1.0 / 720.0,       1.0 / 120.0,
                                       1.0 / 24.0,        1.0 / 6.0,
                                       0.5};
  for (double c : inverse_factorials) p = c + r * p;
  return mi::ScaleD(1.0 + (r + r * r * p), k);
}

inline double LogD(double x) {
  namespace mi = math_internal;
  if (x != x) return x;
  if (x < 0.0) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0.0) return -std::numeric_limits<double>::infinity();
  if (x == std::numeric_limits<double>::infinity()) return x;
  int e = 0;
  if (x < 2.2250738585072014e-308) {
    x *= 4503599627370496.0;  // 2^52
    e = -52;
  }
  const uint64_t bits = mi::Bits64(x);
  e += static_cast<int>((bits >> 52) & 0x7ffu) - 1023;
  double m = mi::FromBits64((bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    ++e;
  }
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  // R = sum over n >= 1 of 2 z^n / (2n + 1), to n = 11 (z <= 0.0295).
  double R = 2.0 / 23;
  for (int n = 10; n >= 1; --n) R = 2.0 / (2 * n + 1) + z * R;
  R *= z;
  const double hfsq = 0.5 * f * f;
  const double k = static_cast<double>(e);
  return k * mi::kLn2HiD + (f - (hfsq - (s * (hfsq + R) + k * mi::kLn2LoD)));
}

// x^y for x >= 0 (a negative x gives NaN): Adam's bias corrections
// beta^step. Computed as e^(y log x) in double, rounded once to float.
inline float Pow(float x, float y) {
  if (y == 0.0f) return 1.0f;
  if (x != x || y != y) return x + y;
  if (x == 1.0f) return 1.0f;
  if (x == 0.0f) {
    return y > 0.0f ? 0.0f : std::numeric_limits<float>::infinity();
  }
  return static_cast<float>(
      ExpD(static_cast<double>(y) * LogD(static_cast<double>(x))));
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_MATH_H_
