"""Fixed-point helpers shared by the integer-training rewrites (converter/integer.py for
FULLY_CONNECTED, converter/integer_conv.py for CONV_2D / DEPTHWISE_CONV_2D): each one the
Python twin of a function in tflm_ops/reference/quantization.h, so the options the
converter writes agree bit for bit with what the kernels compute."""

from __future__ import annotations

import math

import numpy as np
from tflm_train.converter import ops

# The fused activations an int8 layer may carry in integer training.
INT8_ACTIVATIONS = {ops.Activation.NONE, ops.Activation.RELU, ops.Activation.RELU6, ops.Activation.RELU_N1_TO_1}


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(multiplier, shift) with real = multiplier * 2^(shift - 31), as the
    kernels' reference/quantization.h QuantizeMultiplier computes it."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    fixed = int(math.floor(abs(fraction) * (1 << 31) + 0.5)) * (1 if fraction > 0 else -1)
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return fixed, shift


def round_away(value) -> int:
    """Round half away from zero (the kernels' rounding of real values)."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def activation_range(activation, zero_point: int, scale: float) -> tuple[int, int]:
    """reference/quantization.h QuantizedActivationRange for an int8 output (float32 math)."""
    def q(v: float) -> int:
        return zero_point + round_away(float(np.float32(v) / np.float32(scale)))
    low, high = -128, 127
    if activation in (ops.Activation.RELU, ops.Activation.RELU6):
        low = max(q(0.0), -128)
    if activation == ops.Activation.RELU6:
        high = min(q(6.0), 127)
    if activation == ops.Activation.RELU_N1_TO_1:
        low, high = max(q(-1.0), -128), min(q(1.0), 127)
    return low, high


def i32s(*values: int) -> bytes:
    """Little-endian int32 fields of a custom op's options."""
    return b"".join(int(v).to_bytes(4, "little", signed=True) for v in values)
