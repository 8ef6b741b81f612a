// AVERAGE_POOL_2D and MAX_POOL_2D gradients on NHWC tensors, with the pool
// window described by a ConvGeometry (in_c == out_c).
#ifndef TFLM_OPS_REFERENCE_POOLING_H_
#define TFLM_OPS_REFERENCE_POOLING_H_

#include "reference/conv.h"

namespace tflmt {
namespace reference {

// TFLite averages over the window's in-image elements only, so each of them
// receives dy / (that count).
inline void AveragePoolGrad(const float* dy, const ConvGeometry& g, float* dx) {
  const int n = g.in_pixels() * g.in_c;
  for (int i = 0; i < n; ++i) dx[i] = 0.0f;
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    int count = 0;
    ForEachTap(g, b, oy, ox, [&](int, int, int) { ++count; });
    const float* d = dy + p * g.out_c;
    ForEachTap(g, b, oy, ox, [&](int, int, int ip) {
      float* xp = dx + ip * g.in_c;
      for (int c = 0; c < g.in_c; ++c) xp[c] += d[c] / count;
    });
  });
}

// dy flows to the window's first element (row-major) equal to the output,
// as TensorFlow's MaxPoolGrad does. x and y are compared as stored (the
// quantized values of an int8 max pool, whose input and output share scales).
template <typename T>
inline void MaxPoolGrad(const float* dy, const T* x, const T* y,
                        const ConvGeometry& g, float* dx) {
  const int n = g.in_pixels() * g.in_c;
  for (int i = 0; i < n; ++i) dx[i] = 0.0f;
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    for (int c = 0; c < g.in_c; ++c) {
      const int out_index = p * g.out_c + c;
      int winner = -1;
      ForEachTap(g, b, oy, ox, [&](int, int, int ip) {
        if (winner < 0 && x[ip * g.in_c + c] == y[out_index]) winner = ip * g.in_c + c;
      });
      if (winner >= 0) dx[winner] += dy[out_index];
    }
  });
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_POOLING_H_
