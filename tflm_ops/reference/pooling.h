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
  for (int b = 0; b < g.batches; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        int count = 0;
        for (int ky = 0; ky < g.k_h; ++ky) {
          for (int kx = 0; kx < g.k_w; ++kx) {
            count += g.Inside(g.InY(oy, ky), g.InX(ox, kx)) ? 1 : 0;
          }
        }
        if (count == 0) continue;
        const float* d = dy + ((b * g.out_h + oy) * g.out_w + ox) * g.out_c;
        for (int ky = 0; ky < g.k_h; ++ky) {
          const int iy = g.InY(oy, ky);
          for (int kx = 0; kx < g.k_w; ++kx) {
            const int ix = g.InX(ox, kx);
            if (!g.Inside(iy, ix)) continue;
            float* xp = dx + ((b * g.in_h + iy) * g.in_w + ix) * g.in_c;
            for (int c = 0; c < g.in_c; ++c) xp[c] += d[c] / count;
          }
        }
      }
    }
  }
}

// dy flows to the window's first element (row-major) equal to the output,
// as TensorFlow's MaxPoolGrad does. x and y are compared as stored (the
// quantized values of an int8 max pool, whose input and output share scales).
template <typename T>
inline void MaxPoolGrad(const float* dy, const T* x, const T* y,
                        const ConvGeometry& g, float* dx) {
  const int n = g.in_pixels() * g.in_c;
  for (int i = 0; i < n; ++i) dx[i] = 0.0f;
  for (int b = 0; b < g.batches; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        const int out_base = ((b * g.out_h + oy) * g.out_w + ox) * g.out_c;
        for (int c = 0; c < g.in_c; ++c) {
          bool found = false;
          for (int ky = 0; ky < g.k_h && !found; ++ky) {
            const int iy = g.InY(oy, ky);
            for (int kx = 0; kx < g.k_w && !found; ++kx) {
              const int ix = g.InX(ox, kx);
              if (!g.Inside(iy, ix)) continue;
              const int in_index = ((b * g.in_h + iy) * g.in_w + ix) * g.in_c + c;
              if (x[in_index] == y[out_base + c]) {
                dx[in_index] += dy[out_base + c];
                found = true;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_POOLING_H_
