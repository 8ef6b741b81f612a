// Training a fraction of a linear layer's output channels: the frozen filter
// stays in the model and the state holds, for each chosen output channel, a
// delta row added to that channel's frozen filter row (effective filter
// W0 + delta, delta starting at 0). The gradient of the delta equals the
// gradient of the filter row, so training it is training those rows, while
// the parameters, their gradients and any optimizer buffers are sized to the
// chosen channels only.
//
// Row layout follows the frozen filter's row of one output channel: FC
// [in_c], CONV_2D [k_h, k_w, in_c], DEPTHWISE [k_h, k_w] (the channel's taps).
// Which channel owns which row comes from a map with one entry per output
// channel: its row, or -1 where the channel is frozen.
#ifndef TFLM_OPS_REFERENCE_CHANNEL_ROWS_H_
#define TFLM_OPS_REFERENCE_CHANNEL_ROWS_H_

#include <cstdint>

#include "reference/conv.h"
#include "reference/types.h"

namespace tflmt {
namespace reference {

struct ChannelRows {
  const int32_t* row_of_channel = nullptr;  // [out_c]: row, or -1
  int rows = 0;
};

// Values in one delta row of a layer of this kind.
inline int ChannelRowLength(LinearKind kind, const ConvGeometry& g) {
  const int taps = g.k_h * g.k_w;
  return kind == LinearKind::kDepthwiseConv2D ? taps : taps * g.in_c;
}

// Calls f(x_index, w_index) for every product of output (b, oy, ox, co)
// with its delta row `row` (a fully-connected layer is a 1x1 convolution).
template <typename F>
inline void ForEachRowTerm(LinearKind kind, const ConvGeometry& g, int b,
                           int oy, int ox, int co, int row, F f) {
  const int taps = g.k_h * g.k_w;
  ForEachTap(g, b, oy, ox, [&](int ky, int kx, int ip) {
    const int tap = ky * g.k_w + kx;
    if (kind == LinearKind::kDepthwiseConv2D) {
      f(ip * g.in_c + co / g.depth_multiplier, row * taps + tap);
      return;
    }
    const int x0 = ip * g.in_c;
    const int w0 = (row * taps + tap) * g.in_c;
    for (int ci = 0; ci < g.in_c; ++ci) f(x0 + ci, w0 + ci);
  });
}

// out[p, co] += delta_row(co) . x   for every chosen channel co.
inline void ChannelRowsForward(LinearKind kind, const ConvGeometry& g,
                               const ChannelRows& map, const float* delta,
                               const ValuesRef& x, float* out) {
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    for (int co = 0; co < g.out_c; ++co) {
      const int row = map.row_of_channel[co];
      if (row < 0) continue;
      float sum = 0.0f;
      ForEachRowTerm(kind, g, b, oy, ox, co, row,
                     [&](int xi, int wi) { sum += x[xi] * delta[wi]; });
      out[p * g.out_c + co] += sum;
    }
  });
}

// dx += the transposed map of the delta rows applied to dz.
inline void ChannelRowsInputGrad(LinearKind kind, const ConvGeometry& g,
                                 const ChannelRows& map, const float* delta,
                                 const GradRows& dz, float* dx) {
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    const float* d = dz.Row(p);
    for (int co = 0; co < g.out_c; ++co) {
      const int row = map.row_of_channel[co];
      const float grad = d[co];
      if (row < 0 || grad == 0.0f) continue;
      ForEachRowTerm(kind, g, b, oy, ox, co, row,
                     [&](int xi, int wi) { dx[xi] += grad * delta[wi]; });
    }
  });
}

// d delta[row(co)] += sum over output positions of dz[co] * x   (only the
// chosen channels' rows are touched; no full-size gradient exists).
inline void ChannelRowsWeightGrad(LinearKind kind, const ConvGeometry& g,
                                  const ChannelRows& map, const GradRows& dz,
                                  const ValuesRef& x, float* d_delta) {
  ForEachOutput(g, [&](int b, int oy, int ox, int p) {
    const float* d = dz.Row(p);
    for (int co = 0; co < g.out_c; ++co) {
      const int row = map.row_of_channel[co];
      const float grad = d[co];
      if (row < 0 || grad == 0.0f) continue;
      ForEachRowTerm(kind, g, b, oy, ox, co, row,
                     [&](int xi, int wi) { d_delta[wi] += grad * x[xi]; });
    }
  });
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_CHANNEL_ROWS_H_
