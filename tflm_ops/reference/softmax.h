// Softmax backward from its output y, row by row over the last axis:
//   dx = beta * y * (dy - sum(dy * y))     for y = softmax(beta * x).
#ifndef TFLM_OPS_REFERENCE_SOFTMAX_H_
#define TFLM_OPS_REFERENCE_SOFTMAX_H_

#include "reference/types.h"

namespace tflmt {
namespace reference {

inline void SoftmaxGrad(const float* dy, const ValuesRef& y, float beta, int rows,
                        int depth, float* dx) {
  for (int r = 0; r < rows; ++r) {
    const float* dyr = dy + r * depth;
    const ValuesRef yr = y.Offset(r * depth);
    float dot = 0.0f;
    for (int c = 0; c < depth; ++c) dot += dyr[c] * yr[c];
    for (int c = 0; c < depth; ++c) dx[r * depth + c] = beta * yr[c] * (dyr[c] - dot);
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_SOFTMAX_H_
