"""The integer training math in plain Python integers: the bit-exact twin of
tflm_ops/reference/fixed_point.h and lora_int.h, written from their stated
definitions (rounding half away from zero, floor for stochastic rounding,
saturation), plus `IntegerGraph`, which runs a model converted with
--arithmetic int8 op by op from its operators' options, as the kernels read
them. tests/test_integer_training.py compares the kernels with it.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import HEADER_BYTES, Header

INT64_MAX = (1 << 63) - 1
MASK32 = 0xFFFFFFFF


def round_shift(x: int, n: int) -> int:
    """x / 2^n rounded half away from zero."""
    if n <= 0:
        return x
    half = 1 << (n - 1)
    return (x + half) >> n if x >= 0 else -((-x + half) >> n)


def rescale(x: int, multiplier: int, shift: int, extra: int = 0) -> int:
    """x * multiplier * 2^(shift + extra - 31), x first reduced to 31 bits."""
    if multiplier == 0 or x == 0:
        return 0
    reduce = max(abs(x).bit_length() - 31, 0)
    product = round_shift(x, reduce) * multiplier
    right = 31 - shift - extra - reduce
    if right > 62:
        return 0
    if right >= 0:
        return round_shift(product, right)
    left = -right
    limit = 0 if left >= 62 else INT64_MAX >> left
    if product > limit:
        return INT64_MAX
    if product < -limit:
        return -INT64_MAX
    return product << left


def sat(v: int, bits: int) -> int:
    top = (1 << (bits - 1)) - 1
    return max(min(v, top), -top)


LOG2_TABLE = [int(math.floor(math.log2(1 + i / 32) * 65536 + 0.5)) for i in range(33)]
LN2_Q16 = 45426


def log2_q16(x: int) -> int:
    if x == 0:
        return 0
    msb = x.bit_length() - 1
    mantissa = x << (30 - msb) if msb <= 30 else x >> (msb - 30)
    fraction = mantissa - (1 << 30)
    index, rest = fraction >> 25, fraction & ((1 << 25) - 1)
    step = LOG2_TABLE[index + 1] - LOG2_TABLE[index]
    return msb * 65536 + LOG2_TABLE[index] + ((step * rest) >> 25)


def float_bits_from_q16(value: int) -> int:
    if value == 0:
        return 0
    msb = value.bit_length() - 1
    mantissa = value >> (msb - 23) if msb >= 23 else value << (23 - msb)
    return ((msb - 16 + 127) << 23) | (mantissa & 0x7FFFFF)


def q24_from_float(value: float) -> int:
    """What the SGD kernel reads from a float32 learning rate (truncated)."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    exponent, mantissa = (bits >> 23) & 0xFF, (bits & 0x7FFFFF) | 0x800000
    if bits & 0x7FFFFFFF == 0 or exponent == 0:
        return 0
    shift = exponent - 126
    if shift >= 8:
        return (1 << 31) - 1
    return mantissa << shift if shift >= 0 else (0 if shift <= -24 else mantissa >> -shift)


def hash_random(seed: int, step: int, index: int) -> int:
    h = (seed ^ ((step * 0x9E3779B9) & MASK32) ^ ((index * 0x85EBCA6B) & MASK32)) & MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h


def stock_requantize(acc: int, multiplier: int, shift: int) -> int:
    """TFLM's MultiplyByQuantizedMultiplier (doubling high mul, then a
    rounding right shift)."""
    left, right = max(shift, 0), max(-shift, 0)
    a = acc * (1 << left)
    a = (a + (1 << 31)) % (1 << 32) - (1 << 31)  # the int32 cast
    if a == multiplier == -(1 << 31):
        high = (1 << 31) - 1
    else:
        product = a * multiplier
        nudge = (1 << 30) if product >= 0 else 1 - (1 << 30)
        high = _truncdiv(product + nudge, 1 << 31)  # C++ division truncates
    if right == 0:
        return high
    mask = (1 << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if remainder > threshold else 0)


def _truncdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


# ---- the layer math (reference/lora_int.h) ----------------------------------------------
def fc_forward(rows, fan_in, out, x, w, bias, requant, zx, zy, act_min, act_max, rank=0, a=None, b=None, delta=(0, 0),
               bias_delta=None, bias_out=(0, 0), weight_delta=None, weights_out=(0, 0)):
    """y (int8) and the LoRA hidden rows (int32)."""
    y = np.zeros((rows, out), np.int8)
    hidden = np.zeros((rows, rank), np.int32)
    for row in range(rows):
        xr = [int(v) - zx for v in x[row]]
        h = [sat(sum(int(a[j, k]) * xr[k] for k in range(fan_in)), 32) for j in range(rank)]
        hidden[row] = h
        for o in range(out):
            acc = (int(bias[o]) if bias is not None else 0) + sum(int(w[o, k]) * xr[k] for k in range(fan_in))
            v = stock_requantize(acc, int(requant[o, 0]), int(requant[o, 1])) + zy
            if bias_delta is not None:
                v += rescale(int(bias_delta[o]), *bias_out)
            if weight_delta is not None:
                v += rescale(sum(int(weight_delta[o, k]) * xr[k] for k in range(fan_in)), *weights_out)
            if rank:
                v += rescale(sum(int(b[o, j]) * h[j] for j in range(rank)), *delta)
            y[row, o] = min(max(v, act_min), act_max)
    return y, hidden


def fc_backward(rows, fan_in, out, dy, dy_exp, y, x, w, ratios, zx, pass_min, pass_max, qa, qb, qdw, qdl, dx_base,
                rank=0, a=None, b=None, hidden=None, grad_a=None, grad_b=None, want_dx=True, qbias=(0, 0),
                grad_bias=None, qweights=(0, 0), grad_weights=None):
    """Adds into grad_a / grad_b / grad_bias (int lists, in place); returns (dx, exponent) or None."""
    wide = [[0] * fan_in for _ in range(rows)]
    for row in range(rows):
        dh = [0] * rank
        for o in range(out):
            if y is not None and not (pass_min < int(y[row, o]) < pass_max):
                continue
            g = int(dy[row, o])
            if g == 0:
                continue
            if grad_bias is not None:
                grad_bias[o] = sat(grad_bias[o] + rescale(g, *qbias, dy_exp), 32)
            if grad_weights is not None:
                for k in range(fan_in):
                    i = o * fan_in + k
                    grad_weights[i] = sat(grad_weights[i] + rescale(g * (int(x[row, k]) - zx), *qweights, dy_exp), 32)
            for j in range(rank):
                i = o * rank + j
                grad_b[i] = sat(grad_b[i] + rescale(g * int(hidden[row, j]), *qb, dy_exp), 32)
                dh[j] += int(b[o, j]) * g
            if want_dx:
                gw = round_shift(g * int(ratios[o]), 14)
                for k in range(fan_in):
                    wide[row][k] += int(w[o, k]) * gw
        for j in range(rank):
            if dh[j] == 0:
                continue
            for k in range(fan_in):
                i = j * fan_in + k
                grad_a[i] = sat(grad_a[i] + rescale(dh[j] * (int(x[row, k]) - zx), *qa, dy_exp), 32)
        if want_dx:
            for k in range(fan_in):
                lora_part = sum(int(a[j, k]) * dh[j] for j in range(rank))
                wide[row][k] = rescale(wide[row][k], *qdw) + rescale(lora_part, *qdl)
    if not want_dx:
        return None
    largest = max(abs(v) for r in wide for v in r)
    drop = max(largest.bit_length() - 15, 0)
    dx = np.array([[sat(round_shift(v, drop), 16) for v in r] for r in wide], np.int16)
    return dx, dy_exp + dx_base + drop


def softmax_ce(logits, labels, table):
    """(int16 gradient, loss * 2^16)."""
    rows, classes = logits.shape
    grad = np.zeros((rows, classes), np.int16)
    total = 0
    for row in range(rows):
        z = [int(v) for v in logits[row]]
        top = max(z)
        e = [int(table[top - v]) for v in z]
        s = sum(e)
        for c in range(classes):
            v = (e[c] * 32768 + s // 2) // s - (32768 if c == labels[row] else 0)
            if rows > 1:
                v = (v + rows // 2) // rows if v >= 0 else -((-v + rows // 2) // rows)
            grad[row, c] = sat(v, 16)
        el = max(e[labels[row]], 1)
        total += ((log2_q16(s) - log2_q16(el)) * LN2_Q16 + 32768) >> 16
    return grad, total // rows


def sgd(params, grads, lr_q24, stochastic, seed, step):
    for i in range(len(params)):
        t = grads[i] * lr_q24
        grads[i] = 0
        change = (t + hash_random(seed, step, i)) >> 32 if stochastic else round_shift(t, 32)
        params[i] = sat(params[i] - change, 16)


def sgd_momentum(params, grads, velocities, lr_q24, momentum_q16, stochastic, seed, step):
    """Keras' momentum (v = m v - lr g; p += v): the velocity in 2^-16 steps,
    rounded to nearest from 2^-32 steps; the parameter moves by it rounded
    to a whole step (stochastic: 16 random bits, floor)."""
    for i in range(len(params)):
        wide = momentum_q16 * velocities[i] - grads[i] * lr_q24  # 2^-32 steps
        v = sat(round_shift(wide, 16), 32)
        velocities[i] = v
        grads[i] = 0
        change = (v + (hash_random(seed, step, i) >> 16)) >> 16 if stochastic else round_shift(v, 16)
        params[i] = sat(params[i] + change, 16)


# ---- a converted model, op by op ----------------------------------------------------------
def _options(op, count: int) -> tuple[int, ...]:
    blob = bytes(op.customOptions)
    assert len(blob) == 1 + 4 * count, "options of another length than the kernel reads"
    return struct.unpack("<" + "i" * count, blob[1:])


class IntegerGraph:
    """Runs a --arithmetic int8 model's operators in Python on a state."""

    def __init__(self, converted: bytes):
        self.model = Model.from_bytes(converted)

    def _const(self, t):
        return None if t < 0 else self.model.constant(t)

    def step(self, state: bytes, x_q: np.ndarray, label: int, lr: float, update: bool = True) -> tuple[bytes, int]:
        """One train-mode invocation: (the state after it, the loss float32
        bits); update=False stops before the optimizer (the accumulators hold
        this sample's gradients)."""
        model = self.model
        header = Header.unpack(state)
        p = header.param_count
        params = list(np.frombuffer(state, "<i2", count=p, offset=HEADER_BYTES).astype(int))
        grad_offset = HEADER_BYTES + (2 * p + 3) // 4 * 4
        grads = list(np.frombuffer(state, "<i4", count=p, offset=grad_offset).astype(int))
        velocity_offset = grad_offset + 4 * p  # only with momentum (the state is longer)
        velocities = None
        values = {int(model.main.inputs[0]): np.asarray(x_q)}
        self.values = values  # every tensor of the last step, by index
        loss_bits = None
        for op in model.operators:
            kind = model.op_type(op)
            ins, outs = model.inputs_of(op), model.outputs_of(op)
            if kind == "FULLY_CONNECTED":  # a frozen stock layer
                w = self._const(ins[1])
                qx, qw, qy = model.quant(ins[0]), model.quant(ins[1]), model.quant(outs[0])
                sw = np.broadcast_to(qw.scale, (w.shape[0],))
                requant = np.array([_tflm_multiplier(float(qx.scale[0]) * float(s) / float(qy.scale[0])) for s in sw])
                zy = int(qy.zero_point[0])
                act = op.builtinOptions.fusedActivationFunction if op.builtinOptions else 0
                act_min = max(zy, -128) if act == 1 else -128
                x = values[ins[0]].reshape(-1, w.shape[1])
                values[outs[0]], _ = fc_forward(x.shape[0], w.shape[1], w.shape[0], x, w, self._const(ins[2]),
                                                requant, int(qx.zero_point[0]), zy, act_min, 127)
            elif kind == ops.FULLY_CONNECTED_INT:
                head = bytes(op.customOptions)[0] == 2  # a weight delta (--method head)
                o = _options(op, 18 if head else 15)
                rows, fan_in, out, rank, a_off, b_off, bias_off, zx, zy, lo, hi, dm, ds, bm, bs = o[:15]
                w_off, wq = (o[15], o[16:18]) if head else (-1, (0, 0))
                weight_delta = np.array(params[w_off : w_off + out * fan_in]).reshape(out, fan_in) if head else None
                a = np.array(params[a_off : a_off + rank * fan_in]).reshape(rank, fan_in)
                b = np.array(params[b_off : b_off + out * rank]).reshape(out, rank)
                bias_delta = params[bias_off : bias_off + out] if bias_off >= 0 else None
                x = values[ins[0]].reshape(rows, fan_in)
                y, h = fc_forward(rows, fan_in, out, x, self._const(ins[1]), self._const(ins[2]),
                                  self._const(ins[4]).reshape(out, 2), zx, zy, lo, hi, rank, a, b, (dm, ds),
                                  bias_delta, (bm, bs), weight_delta, wq)
                values[outs[0]] = y
                if rank:
                    values[outs[1]] = h
            elif kind == ops.LOSS_INT:
                rows, classes = _options(op, 2)
                logits = values[ins[0]].reshape(rows, classes)
                self.logits = logits  # the int8 logits of the last step
                grad, loss_q16 = softmax_ce(logits, [label] * rows, self._const(ins[3]))
                values[outs[1]], values[outs[2]] = grad, -15
                loss_bits = float_bits_from_q16(loss_q16)
            elif kind == ops.FULLY_CONNECTED_INT_GRAD:
                head = bytes(op.customOptions)[0] == 2
                o = _options(op, 24 if head else 21)
                w_off, qw = (o[21], o[22:24]) if head else (-1, (0, 0))
                rows, fan_in, out, rank, a_off, b_off, bias_off, zx, pmin, pmax = o[:10]
                qbias, qa, qb, qdw, qdl, base = o[10:12], o[12:14], o[14:16], o[16:18], o[18:20], o[20]
                gbias = grads[bias_off : bias_off + out] if bias_off >= 0 else None
                gw = grads[w_off : w_off + out * fan_in] if head else None
                a = np.array(params[a_off : a_off + rank * fan_in]).reshape(rank, fan_in)
                b = np.array(params[b_off : b_off + out * rank]).reshape(out, rank)
                ga, gb = grads[a_off : a_off + rank * fan_in], grads[b_off : b_off + out * rank]
                y = values[ins[2]].reshape(rows, out) if ins[2] >= 0 else None
                x = values[ins[3]].reshape(rows, fan_in) if ins[3] >= 0 else None
                hidden = values[ins[7]] if ins[7] >= 0 else None
                result = fc_backward(rows, fan_in, out, values[ins[0]].reshape(rows, out), values[ins[1]], y, x,
                                     self._const(ins[4]), self._const(ins[8]), zx, pmin, pmax, qa, qb, qdw, qdl, base,
                                     rank, a, b, hidden, ga, gb, want_dx=bool(outs), qbias=qbias, grad_bias=gbias,
                                     qweights=qw, grad_weights=gw)
                if rank:
                    grads[a_off : a_off + len(ga)] = ga
                    grads[b_off : b_off + len(gb)] = gb
                if gbias is not None:
                    grads[bias_off : bias_off + out] = gbias
                if gw is not None:
                    grads[w_off : w_off + out * fan_in] = gw
                if outs:
                    values[outs[0]], values[outs[1]] = result
            elif kind == ops.SGD_INT and update:
                step = header.step + 1
                if bytes(op.customOptions)[0] == 2:  # with momentum (options version 2)
                    rounding, seed, momentum = _options(op, 3)
                    velocities = list(np.frombuffer(state, "<i4", count=p, offset=velocity_offset).astype(int))
                    sgd_momentum(params, grads, velocities, q24_from_float(lr), momentum, rounding == 1,
                                 seed & MASK32, step)
                else:
                    rounding, seed = _options(op, 2)
                    sgd(params, grads, q24_from_float(lr), rounding == 1, seed & MASK32, step)
                header.step = step
        out = bytearray(state)
        struct.pack_into("<I", out, 28, header.step)
        out[HEADER_BYTES : HEADER_BYTES + 2 * p] = np.asarray(params, "<i2").tobytes()
        out[grad_offset : grad_offset + 4 * p] = np.asarray(grads, "<i4").tobytes()
        if velocities is not None:
            out[velocity_offset : velocity_offset + 4 * p] = np.asarray(velocities, "<i4").tobytes()
        return bytes(out), loss_bits


def _tflm_multiplier(real: float) -> tuple[int, int]:
    """TFLM's QuantizeMultiplier (frexp, round half away from zero)."""
    if real == 0:
        return 0, 0
    fraction, shift = math.frexp(real)
    fixed = int(math.floor(fraction * (1 << 31) + 0.5))
    if fixed == 1 << 31:
        fixed, shift = fixed // 2, shift + 1
    return fixed, shift
