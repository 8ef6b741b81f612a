// Shape-only backward math on row-major tensors of up to six dimensions:
// gradients of broadcasting ADD / MUL (sum over the broadcast axes), of MEAN
// (spread over the reduced axes) and of PAD / CONCATENATION (a crop).
#ifndef TFLM_OPS_REFERENCE_BROADCAST_H_
#define TFLM_OPS_REFERENCE_BROADCAST_H_

#include <cstdint>

#include "reference/types.h"

namespace tflmt {
namespace reference {

// Calls f(big_index, a_index, b_index) for every element of `big`, where `a`
// and `b` have big's rank and a 1 on every axis they broadcast along.
template <typename F>
inline void ForEachBroadcast(const Dims& big, const Dims& a, const Dims& b, F f) {
  int coords[kMaxDims] = {0, 0, 0, 0, 0, 0};
  const int n = big.Size();
  for (int index = 0; index < n; ++index) {
    int a_index = 0, b_index = 0;
    for (int axis = 0; axis < big.rank; ++axis) {
      a_index = a_index * a.d[axis] + (a.d[axis] == 1 ? 0 : coords[axis]);
      b_index = b_index * b.d[axis] + (b.d[axis] == 1 ? 0 : coords[axis]);
    }
    f(index, a_index, b_index);
    for (int axis = big.rank - 1; axis >= 0; --axis) {  // next coordinate
      if (++coords[axis] < big.d[axis]) break;
      coords[axis] = 0;
    }
  }
}

// ADD / SUB / MUL operand gradient: dx = sum over broadcast axes of
// sign * dy (* other, for MUL).
inline void BroadcastGrad(const float* dy, const Dims& out, const Dims& in,
                          bool multiply, const ValuesRef& other,
                          const Dims& other_dims, float sign, float* dx) {
  const int n = in.Size();
  for (int i = 0; i < n; ++i) dx[i] = 0.0f;
  ForEachBroadcast(out, in, other_dims, [&](int o, int i, int k) {
    dx[i] += sign * dy[o] * (multiply ? other[k] : 1.0f);
  });
}

// MEAN gradient: every input element gets dy of its reduced position / count.
// `reduced` is the input's dims with the reduced axes set to 1.
inline void MeanGrad(const float* dy, const Dims& in, const Dims& reduced,
                     float* dx) {
  const float count = static_cast<float>(in.Size()) / reduced.Size();
  ForEachBroadcast(in, reduced, reduced,
                   [&](int i, int r, int) { dx[i] = dy[r] / count; });
}

// dst = src[begin : begin + dst dims]  (PAD and CONCATENATION gradients).
inline void Crop(const float* src, const Dims& src_dims, const int* begin,
                 const Dims& dst_dims, float* dst) {
  int coords[kMaxDims] = {0, 0, 0, 0, 0, 0};
  const int n = dst_dims.Size();
  for (int index = 0; index < n; ++index) {
    int src_index = 0;
    for (int axis = 0; axis < dst_dims.rank; ++axis) {
      src_index = src_index * src_dims.d[axis] + coords[axis] + begin[axis];
    }
    dst[index] = src[src_index];
    for (int axis = dst_dims.rank - 1; axis >= 0; --axis) {
      if (++coords[axis] < dst_dims.d[axis]) break;
      coords[axis] = 0;
    }
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_BROADCAST_H_
