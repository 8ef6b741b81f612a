// 2-D convolution and depthwise convolution: forward, input gradient and
// weight gradient, on NHWC tensors and raw pointers.
//
// Layouts follow TFLite: CONV_2D filters [out_c, k_h, k_w, in_c], DEPTHWISE
// filters [1, k_h, k_w, in_c * multiplier] (output channel c * multiplier + m
// reads input channel c). Padding is explicit (top/left; bottom/right follow
// from the output size), so SAME, VALID and a folded PAD op are one case.
// An input position outside the image contributes nothing (a zero real value).
#ifndef TFLM_OPS_REFERENCE_CONV_H_
#define TFLM_OPS_REFERENCE_CONV_H_

#include <cstdint>

#include "reference/types.h"

namespace tflmt {
namespace reference {

// Calls f(b, oy, ox, pixel) for every output position; pixel counts NHW
// output positions.
template <typename F>
inline void ForEachOutput(const ConvGeometry& g, F f) {
  for (int b = 0; b < g.batches; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) f(b, oy, ox, (b * g.out_h + oy) * g.out_w + ox);
    }
  }
}

// Calls f(ky, kx, in_pixel) for each kernel tap of output (b, oy, ox) that
// reads a position inside the image; in_pixel counts NHW input positions.
template <typename F>
inline void ForEachTap(const ConvGeometry& g, int b, int oy, int ox, F f) {
  for (int ky = 0; ky < g.k_h; ++ky) {
    const int iy = g.InY(oy, ky);
    if (iy < 0 || iy >= g.in_h) continue;
    for (int kx = 0; kx < g.k_w; ++kx) {
      const int ix = g.InX(ox, kx);
      if (ix < 0 || ix >= g.in_w) continue;
      f(ky, kx, (b * g.in_h + iy) * g.in_w + ix);
    }
  }
}

// Filter element (co, ky, kx, ci) of a CONV_2D, as a real value.
inline float ConvFilterAt(const WeightsRef& w, const ConvGeometry& g, int co,
                          int ky, int kx, int ci) {
  const int index = ((co * g.k_h + ky) * g.k_w + kx) * g.in_c + ci;
  return w.f32 != nullptr ? w.f32[index] : w.Scale(co) * w.i8[index];
}

// One output (b, oy, ox, co): sum over taps and ci of x * filter (float math).
inline float ConvOutputAt(const ValuesRef& x, const WeightsRef& w,
                          const ConvGeometry& g, int b, int oy, int ox, int co) {
  float sum = 0.0f;
  ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
    const ValuesRef xp = x.Offset(ip * g.in_c);
    for (int ci = 0; ci < g.in_c; ++ci) sum += xp[ci] * ConvFilterAt(w, g, co, ky, kx, ci);
  });
  return sum;
}

// out[p, co] (+)= sum over taps and ci of x * filter   (float math)
inline void ConvForward(const ValuesRef& x, const WeightsRef& w,
                        const ConvGeometry& g, bool accumulate, float* out) {
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    float* o = out + p * g.out_c;
    for (int co = 0; co < g.out_c; ++co) {
      const float sum = ConvOutputAt(x, w, g, b, oy, ox, co);
      o[co] = accumulate ? o[co] + sum : sum;
    }
  });
}

// Integer accumulator of one output of a frozen int8 CONV_2D:
// sum over taps and input channels of (x - x_zp) * w.
inline int32_t ConvAccumulatorInt8(const int8_t* x, int32_t x_zero_point,
                                   const int8_t* w, const ConvGeometry& g,
                                   int b, int oy, int ox, int co) {
  int32_t sum = 0;
  ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
    const int8_t* xp = x + ip * g.in_c;
    const int8_t* wp = w + ((co * g.k_h + ky) * g.k_w + kx) * g.in_c;
    for (int ci = 0; ci < g.in_c; ++ci) {
      sum += (static_cast<int32_t>(xp[ci]) - x_zero_point) * wp[ci];
    }
  });
  return sum;
}

// dx (+)= the transposed convolution of dz with the filter.
inline void ConvInputGrad(const GradRows& dz, const WeightsRef& w,
                          const ConvGeometry& g, bool accumulate, float* dx) {
  if (!accumulate) {
    const int n = g.in_pixels() * g.in_c;
    for (int i = 0; i < n; ++i) dx[i] = 0.0f;
  }
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    const float* d = dz.Row(p);
    ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
      float* xp = dx + ip * g.in_c;
      for (int co = 0; co < g.out_c; ++co) {
        const float grad = d[co];
        if (grad == 0.0f) continue;
        for (int ci = 0; ci < g.in_c; ++ci) xp[ci] += grad * ConvFilterAt(w, g, co, ky, kx, ci);
      }
    });
  });
}

// dw[co, ky, kx, ci] += sum over output pixels of dz[co] * x[tap, ci]
inline void ConvWeightGradAccumulate(const GradRows& dz, const ValuesRef& x,
                                     const ConvGeometry& g, float* dw) {
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    const float* d = dz.Row(p);
    ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
      const ValuesRef xp = x.Offset(ip * g.in_c);
      for (int co = 0; co < g.out_c; ++co) {
        const float grad = d[co];
        if (grad == 0.0f) continue;
        float* wp = dw + ((co * g.k_h + ky) * g.k_w + kx) * g.in_c;
        for (int ci = 0; ci < g.in_c; ++ci) wp[ci] += grad * xp[ci];
      }
    });
  });
}

// ---- depthwise -------------------------------------------------------------------
// Filter element (ky, kx, oc) of a DEPTHWISE_CONV_2D, as a real value.
inline float DepthwiseFilterAt(const WeightsRef& w, const ConvGeometry& g,
                               int ky, int kx, int oc) {
  const int index = (ky * g.k_w + kx) * g.out_c + oc;
  return w.f32 != nullptr ? w.f32[index] : w.Scale(oc) * w.i8[index];
}

inline void DepthwiseForward(const ValuesRef& x, const WeightsRef& w,
                             const ConvGeometry& g, bool accumulate,
                             float* out) {
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    float* o = out + p * g.out_c;
    for (int oc = 0; oc < g.out_c; ++oc) {
      const int ci = oc / g.depth_multiplier;
      float sum = 0.0f;
      ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
        sum += x[ip * g.in_c + ci] * DepthwiseFilterAt(w, g, ky, kx, oc);
      });
      o[oc] = accumulate ? o[oc] + sum : sum;
    }
  });
}

// Integer accumulator of one output of a frozen int8 DEPTHWISE_CONV_2D.
inline int32_t DepthwiseAccumulatorInt8(const int8_t* x, int32_t x_zero_point,
                                        const int8_t* w, const ConvGeometry& g,
                                        int b, int oy, int ox, int oc) {
  const int ci = oc / g.depth_multiplier;
  int32_t sum = 0;
  ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
    sum += (static_cast<int32_t>(x[ip * g.in_c + ci]) - x_zero_point) *
           w[(ky * g.k_w + kx) * g.out_c + oc];
  });
  return sum;
}

// One output of DEPTHWISE_CONV_2D with a float filter (no bias).
inline float DepthwiseOutputAt(const ValuesRef& x, const float* w,
                               const ConvGeometry& g, int b, int oy, int ox,
                               int oc) {
  const int ci = oc / g.depth_multiplier;
  float sum = 0.0f;
  ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
    sum += x[ip * g.in_c + ci] * w[(ky * g.k_w + kx) * g.out_c + oc];
  });
  return sum;
}

inline void DepthwiseInputGrad(const GradRows& dz, const WeightsRef& w,
                               const ConvGeometry& g, bool accumulate,
                               float* dx) {
  if (!accumulate) {
    const int n = g.in_pixels() * g.in_c;
    for (int i = 0; i < n; ++i) dx[i] = 0.0f;
  }
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    const float* d = dz.Row(p);
    ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
      float* xp = dx + ip * g.in_c;
      for (int oc = 0; oc < g.out_c; ++oc) {
        xp[oc / g.depth_multiplier] += d[oc] * DepthwiseFilterAt(w, g, ky, kx, oc);
      }
    });
  });
}

// dw[ky, kx, oc] += sum over output pixels of dz[oc] * x[tap, oc / multiplier]
inline void DepthwiseWeightGradAccumulate(const GradRows& dz, const ValuesRef& x,
                                          const ConvGeometry& g, float* dw) {
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    const float* d = dz.Row(p);
    ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
      const ValuesRef xp = x.Offset(ip * g.in_c);
      float* wp = dw + (ky * g.k_w + kx) * g.out_c;
      for (int oc = 0; oc < g.out_c; ++oc) wp[oc] += d[oc] * xp[oc / g.depth_multiplier];
    });
  });
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_CONV_H_
