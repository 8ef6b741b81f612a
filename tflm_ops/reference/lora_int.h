// Integer training math (--arithmetic int8): an int8 FULLY_CONNECTED layer
// with an int16 LoRA beside it, its backward pass, softmax cross-entropy's
// gradient, and quantized SGD with stochastic rounding. Integers only.
//
// Representations (the converter chooses every scale; converter/integer.py):
//  - parameters: int16 with a fixed per-tensor scale s_p (LoRA A, LoRA B);
//  - their gradients: int32 accumulators in the state in units of
//    s_p * 2^-8 (kGradFractionBits), i.e. the gradient of the real parameter already divided by
//    its scale twice (quantization-aware scaling: the gradient of q = w / s_p
//    is s_p * dL/dw; the update that matches float SGD is that times
//    s_p^-2), so SGD on the integers is q -= lr * g * 2^-8;
//  - activation gradients: int16 values v with a per-tensor power-of-two
//    exponent e (real = v * 2^e), chosen per sample so the largest value
//    keeps 15 bits; products are accumulated in int32 / int64.
// tests/int_reference.py is the bit-exact NumPy twin.
#ifndef TFLM_OPS_REFERENCE_LORA_INT_H_
#define TFLM_OPS_REFERENCE_LORA_INT_H_

#include <cstdint>

#include "reference/fixed_point.h"

namespace tflmt {
namespace reference {

// The most LoRA rank the integer kernels take (a stack array per row).
constexpr int kMaxIntLoraRank = 32;
// Fraction bits of a gradient accumulator below one parameter step: a
// gradient of up to 2^23 steps per unit learning rate fits, and what is
// finer than 2^-8 steps is below any update's resolution.
constexpr int kGradFractionBits = 8;
// The learning rate's fraction bits (Q24).
constexpr int kLearningRateBits = 24;

struct IntLinearShape {
  int rows = 1;  // samples (FULLY_CONNECTED batches)
  int in = 0;
  int out = 0;
};

// A layer's trainable int16 parameters and their int32 gradient
// accumulators (in the state): a LoRA (rank 0: none) and a bias delta
// (null: none) added to the frozen bias.
struct IntLora {
  int rank = 0;
  const int16_t* a = nullptr;  // [rank, in]
  const int16_t* b = nullptr;  // [out, rank]
  int32_t* grad_a = nullptr;
  int32_t* grad_b = nullptr;
  const int16_t* bias = nullptr;  // [out]
  int32_t* grad_bias = nullptr;
  // A full weight delta (--method head: the layer's weights train as
  // W + delta), [out, in]; null: none.
  const int16_t* weights = nullptr;
  int32_t* grad_weights = nullptr;
};

struct IntForwardParams {
  int32_t x_zero_point = 0;
  int32_t y_zero_point = 0;
  int32_t act_min = -128;
  int32_t act_max = 127;
  // [out][2]: the stock kernel's requantization per output channel
  // (multiplier, shift), so that B = 0 gives the stock kernel's bytes.
  const int32_t* channel_requant = nullptr;
  // LoRA term B h (units s_B * s_A * s_x) -> output units, with lora_scale.
  QMult delta;
  // Trainable bias delta (units s_bias) -> output units.
  QMult bias;
  // Weight delta term (units s_delta * s_x) -> output units.
  QMult weights;
};

// TFLM's int8 requantization (reference/quantization.h has the same
// formula for the float path; repeated here to keep this header integer-only).
inline int32_t StockRequantize(int32_t acc, int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const int64_t scaled = static_cast<int64_t>(acc) * (int64_t{1} << left);
  const int32_t a = static_cast<int32_t>(scaled);
  int32_t high;
  if (a == multiplier && a == static_cast<int32_t>(0x80000000u)) {
    high = 2147483647;
  } else {
    const int64_t product = static_cast<int64_t>(a) * multiplier;
    const int64_t nudge = product >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
    high = static_cast<int32_t>((product + nudge) / (int64_t{1} << 31));
  }
  if (right == 0) return high;
  const int32_t mask = static_cast<int32_t>((int64_t{1} << right) - 1);
  const int32_t remainder = high & mask;
  const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + (remainder > threshold ? 1 : 0);
}

// y = clamp(stock(W x + bias) + delta(B h)), h = A (x - zx) kept (int32) for
// the backward pass when `hidden` is not null.
inline void FullyConnectedIntForward(const IntLinearShape& s,
                                     const IntForwardParams& p,
                                     const int8_t* x, const int8_t* w,
                                     const int32_t* bias, const IntLora& lora,
                                     int8_t* y, int32_t* hidden) {
  int32_t h[kMaxIntLoraRank];
  for (int row = 0; row < s.rows; ++row) {
    const int8_t* xr = x + row * s.in;
    for (int j = 0; j < lora.rank; ++j) {
      int64_t acc = 0;
      for (int k = 0; k < s.in; ++k) {
        acc += static_cast<int32_t>(lora.a[j * s.in + k]) * (xr[k] - p.x_zero_point);
      }
      h[j] = SaturateInt32(acc);
      if (hidden != nullptr) hidden[row * lora.rank + j] = h[j];
    }
    for (int o = 0; o < s.out; ++o) {
      int32_t acc = bias != nullptr ? bias[o] : 0;
      for (int k = 0; k < s.in; ++k) {
        acc += static_cast<int32_t>(w[o * s.in + k]) * (xr[k] - p.x_zero_point);
      }
      int64_t out = StockRequantize(acc, p.channel_requant[2 * o],
                                    p.channel_requant[2 * o + 1]) +
                    p.y_zero_point;
      if (lora.bias != nullptr) out += Rescale(lora.bias[o], p.bias);
      if (lora.weights != nullptr) {
        const int16_t* delta_row = lora.weights + o * s.in;
        int64_t delta = 0;
        for (int k = 0; k < s.in; ++k) {
          delta += static_cast<int32_t>(delta_row[k]) * (xr[k] - p.x_zero_point);
        }
        out += Rescale(delta, p.weights);
      }
      if (lora.rank > 0) {
        int64_t delta = 0;
        for (int j = 0; j < lora.rank; ++j) {
          delta += static_cast<int64_t>(lora.b[o * lora.rank + j]) * h[j];
        }
        out += Rescale(delta, p.delta);
      }
      out = out < p.act_min ? p.act_min : (out > p.act_max ? p.act_max : out);
      y[row * s.out + o] = static_cast<int8_t>(out);
    }
  }
}

struct IntBackwardParams {
  int32_t x_zero_point = 0;
  // The gradient passes the fused activation where pass_min < y < pass_max
  // (no activation: bounds outside the int8 range).
  int32_t pass_min = -129;
  int32_t pass_max = 128;
  // [out]: s_w[o] / max(s_w) in Q14 (per-channel weights into one scale).
  const int32_t* channel_weight_ratio = nullptr;
  QMult grad_bias;   // dy, times 2^e(dy) -> grad_bias units
  QMult grad_a;      // dh * (x - zx), times 2^e(dy) -> grad_a units
  QMult grad_b;      // dy * h, times 2^e(dy) -> grad_b units
  QMult grad_weights;  // dy * (x - zx), times 2^e(dy) -> weight delta units
  QMult dx_weights;  // W^T dy (units max(s_w) * 2^e) -> 2^(e + dx_base)
  QMult dx_lora;     // A^T dh (units s_A * s_B * 2^e) -> 2^(e + dx_base)
  int32_t dx_base = 0;
};

// The largest |v| of an int16 gradient after rescaling: 2^15 - 1.
constexpr int kGradientBits = 15;

// Adds this sample's LoRA, bias and weight-delta gradients into the
// accumulators and, when `dx` is not null, writes the input gradient (int16)
// and its exponent (a weight delta's own term is not in dx: the kernel
// refuses that combination). `scratch`
// holds rows * in int64 values (the unscaled input gradient).
//
// Cost: every gradient element is rescaled once (one product and one
// rounding shift: Rescaler works the shifts out once per sample), per-row
// factors are hoisted out of the inner loops, and the products of W^T dy are
// summed without rescaling. The results equal the element-by-element
// definition (Rescale of each product) bit for bit.
inline void FullyConnectedIntBackward(const IntLinearShape& s,
                                      const IntBackwardParams& p,
                                      const int16_t* dy, int32_t dy_exponent,
                                      const int8_t* y, const int8_t* x,
                                      const int8_t* w, const IntLora& lora,
                                      const int32_t* hidden, int16_t* dx,
                                      int32_t* dx_exponent, int64_t* scratch) {
  const Rescaler to_grad_bias(p.grad_bias, dy_exponent);
  const Rescaler to_grad_a(p.grad_a, dy_exponent);
  const Rescaler to_grad_b(p.grad_b, dy_exponent);
  const Rescaler to_grad_weights(p.grad_weights, dy_exponent);
  const Rescaler dx_from_weights(p.dx_weights, 0);
  const Rescaler dx_from_lora(p.dx_lora, 0);
  const int rank = lora.rank;
  int64_t dh[kMaxIntLoraRank];
  uint64_t largest = 0;
  for (int row = 0; row < s.rows; ++row) {
    const int16_t* dyr = dy + row * s.out;
    const int8_t* yr = y != nullptr ? y + row * s.out : nullptr;
    const int32_t* hr = rank > 0 ? hidden + row * rank : nullptr;
    int64_t* wide = dx != nullptr ? scratch + row * s.in : nullptr;
    for (int j = 0; j < rank; ++j) dh[j] = 0;
    if (wide != nullptr) {
      for (int k = 0; k < s.in; ++k) wide[k] = 0;
    }
    for (int o = 0; o < s.out; ++o) {
      if (yr != nullptr && !(yr[o] > p.pass_min && yr[o] < p.pass_max)) continue;
      const int32_t g = dyr[o];
      if (g == 0) continue;
      if (lora.grad_bias != nullptr) {
        lora.grad_bias[o] = SaturateInt32(lora.grad_bias[o] + to_grad_bias(g));
      }
      const int16_t* b_row = rank > 0 ? lora.b + o * rank : nullptr;
      int32_t* grad_b_row = rank > 0 ? lora.grad_b + o * rank : nullptr;
      for (int j = 0; j < rank; ++j) {
        grad_b_row[j] = SaturateInt32(grad_b_row[j] + to_grad_b(static_cast<int64_t>(g) * hr[j]));
        dh[j] += static_cast<int64_t>(b_row[j]) * g;
      }
      if (lora.grad_weights != nullptr) {
        // |g (x - zx)| < 2^23: always one product, the row's g * multiplier
        // taken once.
        int32_t* grad_row = lora.grad_weights + o * s.in;
        const int8_t* x_row = x + row * s.in;
        if (to_grad_weights.direct()) {
          const int64_t factor = static_cast<int64_t>(g) * to_grad_weights.multiplier();
          for (int k = 0; k < s.in; ++k) {
            const int64_t change = to_grad_weights.FromProduct(factor * (x_row[k] - p.x_zero_point));
            grad_row[k] = SaturateInt32(grad_row[k] + change);
          }
        } else {
          for (int k = 0; k < s.in; ++k) {
            const int64_t change = to_grad_weights(static_cast<int64_t>(g) * (x_row[k] - p.x_zero_point));
            grad_row[k] = SaturateInt32(grad_row[k] + change);
          }
        }
      }
      if (wide != nullptr) {
        // Per-channel weight scales folded into dy: g * s_w[o] / max(s_w).
        const int32_t gw = static_cast<int32_t>(
            RoundShift(static_cast<int64_t>(g) * p.channel_weight_ratio[o], 14));
        const int8_t* w_row = w + o * s.in;
        for (int k = 0; k < s.in; ++k) wide[k] += static_cast<int32_t>(w_row[k]) * gw;
      }
    }
    const int8_t* xr = x != nullptr ? x + row * s.in : nullptr;
    for (int j = 0; j < rank; ++j) {
      if (dh[j] == 0) continue;
      int32_t* grad_a_row = lora.grad_a + j * s.in;
      // |dh| < 2^23 and |x - zx| <= 255: every product fits 31 bits, so the
      // row's factor dh * multiplier is taken once (exact: integers).
      if (to_grad_a.direct() && dh[j] > -(int64_t{1} << 23) && dh[j] < (int64_t{1} << 23)) {
        const int64_t factor = dh[j] * to_grad_a.multiplier();
        for (int k = 0; k < s.in; ++k) {
          const int64_t change = to_grad_a.FromProduct(factor * (xr[k] - p.x_zero_point));
          grad_a_row[k] = SaturateInt32(grad_a_row[k] + change);
        }
      } else {
        for (int k = 0; k < s.in; ++k) {
          const int64_t change = to_grad_a(dh[j] * (xr[k] - p.x_zero_point));
          grad_a_row[k] = SaturateInt32(grad_a_row[k] + change);
        }
      }
    }
    if (wide != nullptr) {
      // Both paths to one fixed-point unit 2^(e + dx_base), in int64.
      for (int k = 0; k < s.in; ++k) {
        int64_t lora_part = 0;
        for (int j = 0; j < rank; ++j) {
          lora_part += static_cast<int64_t>(lora.a[j * s.in + k]) * dh[j];
        }
        const int64_t v = dx_from_weights(wide[k]) + dx_from_lora(lora_part);
        wide[k] = v;
        const uint64_t magnitude = Magnitude(v);
        if (magnitude > largest) largest = magnitude;
      }
    }
  }
  if (dx == nullptr) return;
  // One power-of-two exponent for the whole tensor: the largest value keeps
  // 15 bits.
  const int bits = BitLength(largest);
  const int drop = bits > kGradientBits ? bits - kGradientBits : 0;
  for (int i = 0; i < s.rows * s.in; ++i) {
    dx[i] = SaturateInt16(RoundShift(scratch[i], drop));
  }
  *dx_exponent = dy_exponent + p.dx_base + drop;
}

// Softmax cross-entropy on int8 logits, in integers. exp_table[d] =
// round(2^16 * exp(-d * s_logits)) for d = max logit - logit in [0, 255].
// grad = (softmax - onehot) / rows as int16 with exponent -15; loss_q16 =
// mean -ln(p_label) * 2^16 (p from the same table; at least 2^-16).
inline void SoftmaxCrossEntropyInt(const int8_t* logits, const int32_t* labels,
                                   int rows, int classes,
                                   const int32_t* exp_table, int16_t* grad,
                                   uint32_t* loss_q16) {
  uint64_t loss_sum = 0;
  for (int row = 0; row < rows; ++row) {
    const int8_t* z = logits + row * classes;
    int32_t top = -128;
    for (int c = 0; c < classes; ++c) top = z[c] > top ? z[c] : top;
    uint32_t sum = 0;
    for (int c = 0; c < classes; ++c) sum += static_cast<uint32_t>(exp_table[top - z[c]]);
    const int32_t label = labels[row];
    for (int c = 0; c < classes; ++c) {
      const uint32_t e = static_cast<uint32_t>(exp_table[top - z[c]]);
      // p in Q15, rounded: e <= 2^16, so e * 2^15 fits 32 bits.
      const int32_t prob = static_cast<int32_t>((e * 32768u + sum / 2) / sum);
      int32_t v = prob - (c == label ? 32768 : 0);
      if (rows > 1) {
        v = v >= 0 ? (v + rows / 2) / rows : -((-v + rows / 2) / rows);
      }
      grad[row * classes + c] = SaturateInt16(v);
    }
    uint32_t e_label = static_cast<uint32_t>(exp_table[top - z[label]]);
    if (e_label == 0) e_label = 1;
    const int64_t log2_ratio = Log2Q16(sum) - Log2Q16(e_label);
    loss_sum += static_cast<uint64_t>((log2_ratio * kLn2Q16 + 32768) >> 16);
  }
  *loss_q16 = static_cast<uint32_t>(loss_sum / static_cast<uint64_t>(rows));
}

// Quantized SGD: q -= round(lr * g * 2^-8), lr in Q24, g in units of
// s_p * 2^-8 (see the top). Stochastic rounding adds a uniform fraction
// from HashRandom(seed, step, i) before flooring (unbiased); otherwise round
// half away from zero. Parameters stay in [-32767, 32767]; the accumulators
// are cleared.
inline void SgdIntUpdate(int16_t* params, int32_t* grads, int count,
                         int32_t lr_q24, bool stochastic, uint32_t seed,
                         uint32_t step) {
  constexpr int kShift = kGradFractionBits + kLearningRateBits;  // 32
  // Branch-free loops (a zero gradient changes nothing either way: its
  // fraction or rounding half stays below one step), one per rounding.
  if (stochastic) {
    for (int i = 0; i < count; ++i) {
      const int64_t t = static_cast<int64_t>(grads[i]) * lr_q24;  // 2^-32 steps
      // A uniform fraction in [0, 1) steps: 32 random bits; floor by the
      // arithmetic shift.
      const int64_t fraction = HashRandom(seed, step, static_cast<uint32_t>(i));
      params[i] = SaturateInt16(static_cast<int64_t>(params[i]) - ((t + fraction) >> kShift));
      grads[i] = 0;
    }
    return;
  }
  for (int i = 0; i < count; ++i) {
    const int64_t t = static_cast<int64_t>(grads[i]) * lr_q24;
    params[i] = SaturateInt16(static_cast<int64_t>(params[i]) - RoundShift(t, kShift));
    grads[i] = 0;
  }
}

// Quantized SGD with momentum, Keras' form (v = m v - lr g; p += v) in
// fixed point. The velocity is int32 in units of 2^-16 parameter steps
// (kVelocityFractionBits): it keeps what one update's whole-step rounding
// drops (an update of 0.3 steps is carried, not lost), and its range, 2^15
// steps, is the int16 parameter's own. The momentum is Q16 (m < 1). Per
// parameter: m v - lr g in 2^-32 steps (int64: Q16 x 2^-16 and Q24 x 2^-8),
// rounded to nearest into the velocity; the parameter moves by the velocity
// rounded to a whole step, stochastically (HashRandom, as SgdIntUpdate) or
// to nearest. Accumulators are cleared.
constexpr int kVelocityFractionBits = 16;
constexpr int kMomentumBits = 16;

inline void SgdMomentumIntUpdate(int16_t* params, int32_t* grads, int32_t* velocities,
                                 int count, int32_t lr_q24, int32_t momentum_q16,
                                 bool stochastic, uint32_t seed, uint32_t step) {
  constexpr int kToVelocity = kGradFractionBits + kLearningRateBits - kVelocityFractionBits;  // 16
  static_assert(kMomentumBits == kToVelocity, "m v and lr g share one unit");
  for (int i = 0; i < count; ++i) {
    const int64_t wide = static_cast<int64_t>(momentum_q16) * velocities[i] -
                         static_cast<int64_t>(grads[i]) * lr_q24;  // 2^-32 steps
    const int32_t v = SaturateInt32(RoundShift(wide, kToVelocity));
    velocities[i] = v;
    grads[i] = 0;
    int64_t change;
    if (stochastic) {
      // A uniform fraction in [0, 1) steps: 16 random bits; floor.
      const int64_t fraction = HashRandom(seed, step, static_cast<uint32_t>(i)) >> 16;
      change = (static_cast<int64_t>(v) + fraction) >> kVelocityFractionBits;
    } else {
      change = RoundShift(v, kVelocityFractionBits);
    }
    params[i] = SaturateInt16(static_cast<int64_t>(params[i]) + change);
  }
}

}  // namespace reference
}  // namespace tflmt

#endif  // TFLM_OPS_REFERENCE_LORA_INT_H_
