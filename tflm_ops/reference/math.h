// Elementary functions the reference math uses, in one place so that every
// target computes them the same way.
//
// For now they forward to the C library; device and host libms differ in the
// last bits (newlib vs glibc), which is why they are wrapped: a bit-exact,
// IEEE-basic-operation version can replace them here without touching the
// kernels.
#ifndef TFLM_OPS_REFERENCE_MATH_H_
#define TFLM_OPS_REFERENCE_MATH_H_

#include <cmath>

namespace tflmt {
namespace reference {

inline float Tanh(float x) { return std::tanh(x); }

inline float Logistic(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_MATH_H_
