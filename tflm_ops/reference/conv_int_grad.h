// Integer training through convolutions (--arithmetic int8): an int8
// CONV_2D / DEPTHWISE_CONV_2D with an int16 trainable bias delta, its
// backward pass (bias gradient, input gradient) and the backward pass of the
// pools between convolutions and the classifier (MAX_POOL_2D, AVERAGE_POOL_2D,
// MEAN over height and width). Integers only.
//
// Representations are those of reference/lora_int.h: activation gradients
// are int16 values v with a per-tensor power-of-two exponent e (real = v *
// 2^e), a bias delta is int16 in fixed steps, its gradient an int32
// accumulator in units of its step * 2^-kGradFractionBits. Every scale is a
// fixed-point multiplier the converter computed (converter/integer_conv.py).
// tests/int_conv_reference.py is the NumPy twin used by the tests.
#ifndef TFLM_OPS_REFERENCE_CONV_INT_GRAD_H_
#define TFLM_OPS_REFERENCE_CONV_INT_GRAD_H_

#include <cstdint>

#include "reference/conv.h"  // ForEachTap: the taps inside the image
#include "reference/fixed_point.h"
#include "reference/lora_int.h"
#include "reference/types.h"

namespace tflmt {
namespace reference {

// Where the filter value of (output channel, tap, input channel) sits:
// CONV_2D filters are [out_c, k_h, k_w, in_c]; DEPTHWISE [1, k_h, k_w, out_c]
// and output channel co reads input channel co / depth_multiplier.
inline int IntFilterIndex(const ConvGeometry& g, bool depthwise, int co, int ky,
                          int kx, int ci) {
  return depthwise ? (ky * g.k_w + kx) * g.out_c + co
                   : ((co * g.k_h + ky) * g.k_w + kx) * g.in_c + ci;
}

struct IntConvForwardParams {
  bool depthwise = false;
  int32_t x_zero_point = 0;
  int32_t y_zero_point = 0;
  int32_t act_min = -128;
  int32_t act_max = 127;
  // [out_c][2]: the stock kernel's requantization (multiplier, shift).
  const int32_t* channel_requant = nullptr;
  QMult bias;  // a bias-delta step -> output steps
};

// y = clamp(stock(conv(x, w) + bias) + bias_delta): with a zero delta the
// stock int8 kernel's bytes.
inline void ConvIntForward(const ConvGeometry& g, const IntConvForwardParams& p,
                           const int8_t* x, const int8_t* w, const int32_t* bias,
                           const int16_t* bias_delta, int8_t* y) {
  for (int b = 0; b < g.batches; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        int8_t* out = y + ((b * g.out_h + oy) * g.out_w + ox) * g.out_c;
        for (int co = 0; co < g.out_c; ++co) {
          int32_t acc = bias != nullptr ? bias[co] : 0;
          const int ci_first = p.depthwise ? co / g.depth_multiplier : 0;
          const int ci_end = p.depthwise ? ci_first + 1 : g.in_c;
          ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
            const int8_t* xp = x + ip * g.in_c;
            for (int ci = ci_first; ci < ci_end; ++ci) {
              acc += (xp[ci] - p.x_zero_point) *
                     static_cast<int32_t>(w[IntFilterIndex(g, p.depthwise, co, ky, kx, ci)]);
            }
          });
          int64_t v = StockRequantize(acc, p.channel_requant[2 * co],
                                      p.channel_requant[2 * co + 1]) +
                      p.y_zero_point;
          if (bias_delta != nullptr) v += Rescale(bias_delta[co], p.bias);
          v = v < p.act_min ? p.act_min : (v > p.act_max ? p.act_max : v);
          out[co] = static_cast<int8_t>(v);
        }
      }
    }
  }
}

// int64 scratch values (real = v * 2^exponent) -> int16 with one exponent
// for the tensor, the largest keeping kGradientBits bits.
inline void NormalizeGradient(const int64_t* scratch, int count, int32_t exponent,
                              int16_t* out, int32_t* out_exponent) {
  uint64_t largest = 0;
  for (int i = 0; i < count; ++i) {
    const int64_t v = scratch[i];
    const uint64_t magnitude =
        v >= 0 ? static_cast<uint64_t>(v) : static_cast<uint64_t>(-(v + 1)) + 1;
    if (magnitude > largest) largest = magnitude;
  }
  const int bits = BitLength(largest);
  const int drop = bits > kGradientBits ? bits - kGradientBits : 0;
  for (int i = 0; i < count; ++i) out[i] = SaturateInt16(RoundShift(scratch[i], drop));
  *out_exponent = exponent + drop;
}

struct IntConvBackwardParams {
  bool depthwise = false;
  // The gradient passes the fused activation where pass_min < y < pass_max.
  int32_t pass_min = -129;
  int32_t pass_max = 128;
  // [out_c]: s_w[co] / max(s_w) in Q14 (per-channel weights into one scale).
  const int32_t* channel_weight_ratio = nullptr;
  QMult grad_bias;   // sum of dy, times 2^e(dy) -> accumulator units
  QMult dx_weights;  // W^T dy (units max(s_w) * 2^e) -> 2^(e + dx_base)
  int32_t dx_base = 0;
};

// Adds this sample's bias gradient into `grad_bias` (when not null) and, when
// `dx` is not null, writes the input gradient and its exponent. `scratch`
// holds out_c int64 values (per-channel sums), plus in_pixels * in_c with dx.
inline void ConvIntBackward(const ConvGeometry& g, const IntConvBackwardParams& p,
                            const int16_t* dy, int32_t dy_exponent, const int8_t* y,
                            const int8_t* w, int32_t* grad_bias, int16_t* dx,
                            int32_t* dx_exponent, int64_t* scratch) {
  const int in_values = g.in_pixels() * g.in_c;
  int64_t* bias_sum = scratch;
  int64_t* dx_sum = scratch + g.out_c;
  if (dx != nullptr) {
    for (int i = 0; i < in_values; ++i) dx_sum[i] = 0;
  }
  for (int co = 0; co < g.out_c; ++co) bias_sum[co] = 0;
  for (int b = 0; b < g.batches; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        const int pixel = (b * g.out_h + oy) * g.out_w + ox;
        for (int co = 0; co < g.out_c; ++co) {
          const int index = pixel * g.out_c + co;
          if (y != nullptr && !(y[index] > p.pass_min && y[index] < p.pass_max)) continue;
          const int32_t d = dy[index];
          if (d == 0) continue;
          bias_sum[co] += d;
          if (dx == nullptr) continue;
          // Per-channel weight scales folded into dy: d * s_w[co] / max(s_w).
          const int32_t dw = static_cast<int32_t>(
              RoundShift(static_cast<int64_t>(d) * p.channel_weight_ratio[co], 14));
          const int ci_first = p.depthwise ? co / g.depth_multiplier : 0;
          const int ci_end = p.depthwise ? ci_first + 1 : g.in_c;
          ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
            int64_t* target = dx_sum + ip * g.in_c;
            for (int ci = ci_first; ci < ci_end; ++ci) {
              target[ci] += static_cast<int64_t>(
                  w[IntFilterIndex(g, p.depthwise, co, ky, kx, ci)]) * dw;
            }
          });
        }
      }
    }
  }
  if (grad_bias != nullptr) {
    for (int co = 0; co < g.out_c; ++co) {
      grad_bias[co] = SaturateInt32(grad_bias[co] + Rescale(bias_sum[co], p.grad_bias, dy_exponent));
    }
  }
  if (dx == nullptr) return;
  for (int i = 0; i < in_values; ++i) dx_sum[i] = Rescale(dx_sum[i], p.dx_weights);
  NormalizeGradient(dx_sum, in_values, dy_exponent + p.dx_base, dx, dx_exponent);
}

enum class IntPoolKind : int32_t { kMax = 0, kAverage = 1 };

// Fraction bits of an average pool's share 1/count.
constexpr int kPoolShareBits = 24;

// Whether an input position can lie in more than one window of a pool.
inline bool PoolWindowsOverlap(const ConvGeometry& g) {
  return g.stride_h < g.k_h || g.stride_w < g.k_w;
}

// Calls f(input pixel, channel, value * 2^-kPoolShareBits) for what each
// output's gradient gives each input: max, all of it to the first largest
// input of its window (x, int8); average, 1/count of it to each inside tap.
template <typename F>
inline void ForEachPoolShare(const ConvGeometry& g, IntPoolKind kind, const int16_t* dy,
                             const int8_t* x, F f) {
  const int channels = g.in_c;
  for (int b = 0; b < g.batches; ++b) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      for (int ox = 0; ox < g.out_w; ++ox) {
        const int pixel = (b * g.out_h + oy) * g.out_w + ox;
        int count = 0;
        ForEachTap(g, b, oy, ox, [&](int, int, int) { ++count; });
        if (count == 0) continue;
        const int64_t share = ((int64_t{1} << kPoolShareBits) + count / 2) / count;
        for (int c = 0; c < channels; ++c) {
          const int32_t d = dy[pixel * channels + c];
          if (d == 0) continue;
          if (kind == IntPoolKind::kAverage) {
            ForEachTap(g, b, oy, ox, [&](int, int, int ip) { f(ip, c, d * share); });
            continue;
          }
          int best = -1;
          int32_t best_value = -129;
          ForEachTap(g, b, oy, ox, [&](int, int, int ip) {
            if (x[ip * channels + c] > best_value) {
              best_value = x[ip * channels + c];
              best = ip;
            }
          });
          f(best, c, static_cast<int64_t>(d) * (int64_t{1} << kPoolShareBits));
        }
      }
    }
  }
}

// The input gradient of a pool (geometry: k = the window, in_c = out_c =
// channels); MEAN over height and width is the average pool whose window is
// the whole image. Overlapping windows sum their shares in `scratch`
// (in_pixels * channels int64 values); otherwise each input gets at most one
// share, and two passes (the largest share, then the values) need no scratch
// (null) and give the same bytes.
inline void PoolIntBackward(const ConvGeometry& g, IntPoolKind kind,
                            const int16_t* dy, int32_t dy_exponent, const int8_t* x,
                            int16_t* dx, int32_t* dx_exponent, int64_t* scratch) {
  const int channels = g.in_c;
  const int in_values = g.in_pixels() * channels;
  if (scratch != nullptr) {
    for (int i = 0; i < in_values; ++i) scratch[i] = 0;
    ForEachPoolShare(g, kind, dy, x, [&](int ip, int c, int64_t v) { scratch[ip * channels + c] += v; });
    NormalizeGradient(scratch, in_values, dy_exponent - kPoolShareBits, dx, dx_exponent);
    return;
  }
  uint64_t largest = 0;
  ForEachPoolShare(g, kind, dy, x, [&](int, int, int64_t v) {
    const uint64_t magnitude =
        v >= 0 ? static_cast<uint64_t>(v) : static_cast<uint64_t>(-(v + 1)) + 1;
    if (magnitude > largest) largest = magnitude;
  });
  const int bits = BitLength(largest);
  const int drop = bits > kGradientBits ? bits - kGradientBits : 0;
  for (int i = 0; i < in_values; ++i) dx[i] = 0;
  ForEachPoolShare(g, kind, dy, x, [&](int ip, int c, int64_t v) {
    dx[ip * channels + c] = SaturateInt16(RoundShift(v, drop));
  });
  *dx_exponent = dy_exponent - kPoolShareBits + drop;
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_CONV_INT_GRAD_H_
