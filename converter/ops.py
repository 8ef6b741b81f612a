"""Names and option blobs of tflm-train's custom ops.

Mirrors tflm_ops/kernels/kernels.h (names) and the kernels' option readers
(little-endian fields in a fixed order after a version byte). A test keeps
the names equal to the plugin's own list.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

OPTIONS_VERSION = 1

STATE = "TFLMT_STATE"
FULLY_CONNECTED = "TFLMT_FULLY_CONNECTED"
FULLY_CONNECTED_GRAD = "TFLMT_FULLY_CONNECTED_GRAD"
CONV_2D = "TFLMT_CONV_2D"
CONV_2D_GRAD = "TFLMT_CONV_2D_GRAD"
DEPTHWISE_CONV_2D = "TFLMT_DEPTHWISE_CONV_2D"
DEPTHWISE_CONV_2D_GRAD = "TFLMT_DEPTHWISE_CONV_2D_GRAD"
ADAPTER = "TFLMT_ADAPTER"
ADAPTER_GRAD = "TFLMT_ADAPTER_GRAD"
ACTIVATION_GRAD = "TFLMT_ACTIVATION_GRAD"
SOFTMAX_GRAD = "TFLMT_SOFTMAX_GRAD"
LOSS = "TFLMT_LOSS"
OPTIMIZER = "TFLMT_OPTIMIZER"
ADD_GRADS = "TFLMT_ADD_GRADS"
POOL_GRAD = "TFLMT_POOL_GRAD"
MEAN_GRAD = "TFLMT_MEAN_GRAD"
CROP = "TFLMT_CROP"
BROADCAST_GRAD = "TFLMT_BROADCAST_GRAD"

ALL_OPS = (
    STATE,
    FULLY_CONNECTED,
    FULLY_CONNECTED_GRAD,
    CONV_2D,
    CONV_2D_GRAD,
    DEPTHWISE_CONV_2D,
    DEPTHWISE_CONV_2D_GRAD,
    ADAPTER,
    ADAPTER_GRAD,
    ACTIVATION_GRAD,
    SOFTMAX_GRAD,
    LOSS,
    OPTIMIZER,
    ADD_GRADS,
    POOL_GRAD,
    MEAN_GRAD,
    CROP,
    BROADCAST_GRAD,
)


class Mode(IntEnum):
    """Values of a converted model's `mode` input."""

    INFER = 0
    TRAIN = 1
    EVALUATE = 2
    SKIP = 3  # a bad sample: forward only, counted as skipped in the state


class Activation(IntEnum):
    """TFLite's fused activation numbering (ActivationFunctionType)."""

    NONE = 0
    RELU = 1
    RELU_N1_TO_1 = 2
    RELU6 = 3
    TANH = 4
    LOGISTIC = 100  # not fusable; used by the activation-gradient op


class LinearKind(IntEnum):
    FULLY_CONNECTED = 0
    CONV_2D = 1
    DEPTHWISE_CONV_2D = 2


_LINEAR_OPS = {
    LinearKind.FULLY_CONNECTED: (FULLY_CONNECTED, FULLY_CONNECTED_GRAD),
    LinearKind.CONV_2D: (CONV_2D, CONV_2D_GRAD),
    LinearKind.DEPTHWISE_CONV_2D: (DEPTHWISE_CONV_2D, DEPTHWISE_CONV_2D_GRAD),
}


@dataclass
class LinearLayer:
    """A fully-connected, conv or depthwise layer and where its parts live.

    A fully-connected layer is a 1x1 convolution over its rows. Offsets count
    float32 values from the start of the state's parameters; -1 means the part
    is frozen in the model (or absent). Padding is explicit (top, left).
    """

    kind: int
    in_channels: int
    out_channels: int
    activation: int = Activation.NONE
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    depth_multiplier: int = 1
    out_size: tuple[int, int] = (1, 1)
    weight_offset: int = -1
    bias_offset: int = -1
    lora_rank: int = 0
    lora_a_offset: int = -1
    lora_b_offset: int = -1
    lora_scale: float = 0.0
    # bit 0 (backward op): dy arrives pooled over the output positions;
    # bit 1 (both ops): the forward op writes a 1-bit activation mask as its
    # last output and the backward op reads it in place of the output.
    grad_flags: int = 0

    _FORMAT = "<BBB" + "i" * 13 + "iiiiifB"

    @classmethod
    def fully_connected(cls, in_features: int, units: int, activation: int = Activation.NONE, **parts) -> "LinearLayer":
        return cls(LinearKind.FULLY_CONNECTED, in_features, units, activation, **parts)

    @property
    def forward_op(self) -> str:
        return _LINEAR_OPS[LinearKind(self.kind)][0]

    @property
    def grad_op(self) -> str:
        return _LINEAR_OPS[LinearKind(self.kind)][1]

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == LinearKind.FULLY_CONNECTED:
            return (self.out_channels, self.in_channels)
        if self.kind == LinearKind.CONV_2D:
            return (self.out_channels, *self.kernel, self.in_channels)
        return (1, *self.kernel, self.out_channels)

    def lora_a_shape(self, rank: int) -> tuple[int, ...]:
        if self.kind == LinearKind.DEPTHWISE_CONV_2D:
            return (rank, self.taps)
        return (rank, *(self.kernel if self.kind == LinearKind.CONV_2D else ()), self.in_channels)

    @classmethod
    def from_options(cls, blob: bytes) -> "LinearLayer":
        f = struct.unpack(cls._FORMAT, bytes(blob))
        if f[0] != OPTIONS_VERSION:
            raise ValueError(f"options version {f[0]}, expected {OPTIONS_VERSION}")
        return cls(
            kind=f[1],
            activation=f[2],
            kernel=(f[3], f[4]),
            stride=(f[5], f[6]),
            dilation=(f[7], f[8]),
            padding=(f[9], f[10]),
            depth_multiplier=f[11],
            in_channels=f[12],
            out_channels=f[13],
            out_size=(f[14], f[15]),
            weight_offset=f[16],
            bias_offset=f[17],
            lora_rank=f[18],
            lora_a_offset=f[19],
            lora_b_offset=f[20],
            lora_scale=f[21],
            grad_flags=f[22],
        )

    def options(self) -> bytes:
        return struct.pack(
            self._FORMAT,
            OPTIONS_VERSION,
            int(self.kind),
            int(self.activation),
            *self.kernel,
            *self.stride,
            *self.dilation,
            *self.padding,
            self.depth_multiplier,
            self.in_channels,
            self.out_channels,
            *self.out_size,
            self.weight_offset,
            self.bias_offset,
            self.lora_rank,
            self.lora_a_offset,
            self.lora_b_offset,
            self.lora_scale,
            self.grad_flags,
        )


@dataclass
class AdapterLayer:
    """A bottleneck adapter's shape and where D, bd, U, bu sit in the state."""

    features: int
    bottleneck: int
    down_offset: int
    down_bias_offset: int
    up_offset: int
    up_bias_offset: int
    activation: int = Activation.RELU

    _FORMAT = "<BBiiiiii"

    @classmethod
    def from_options(cls, blob: bytes) -> "AdapterLayer":
        fields = struct.unpack(cls._FORMAT, bytes(blob))
        if fields[0] != OPTIONS_VERSION:
            raise ValueError(f"options version {fields[0]}, expected {OPTIONS_VERSION}")
        activation, *rest = fields[1:]
        return cls(*rest, activation=activation)

    def options(self) -> bytes:
        return struct.pack(
            self._FORMAT,
            OPTIONS_VERSION,
            int(self.activation),
            self.features,
            self.bottleneck,
            self.down_offset,
            self.down_bias_offset,
            self.up_offset,
            self.up_bias_offset,
        )


def version_only_options() -> bytes:
    return struct.pack("<B", OPTIONS_VERSION)


def activation_grad_options(activation: int) -> bytes:
    return struct.pack("<BB", OPTIONS_VERSION, int(activation))


def softmax_grad_options(beta: float) -> bytes:
    return struct.pack("<Bf", OPTIONS_VERSION, beta)


LOSS_KINDS = {"ce": 0, "mse": 1, "bce": 2}


def loss_options(kind: str) -> bytes:
    return struct.pack("<BB", OPTIONS_VERSION, LOSS_KINDS[kind])


OPTIMIZER_KINDS = {"sgd": 0, "momentum": 1, "adam": 2}


@dataclass
class OptimizerConfig:
    """Update rule and its constants (the learning rate is a model input)."""

    kind: str = "sgd"
    accumulate: int = 1
    clip_norm: float = 0.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-7

    def options(self) -> bytes:
        return struct.pack(
            "<BBifffff",
            OPTIONS_VERSION,
            OPTIMIZER_KINDS[self.kind],
            self.accumulate,
            self.clip_norm,
            self.momentum,
            self.beta1,
            self.beta2,
            self.epsilon,
        )


MAX_DIMS = 6


def _dims(shape) -> list[int]:
    shape = [int(d) for d in shape]
    if not 1 <= len(shape) <= MAX_DIMS:
        raise ValueError(f"rank {len(shape)} is not supported (1..{MAX_DIMS})")
    return shape + [1] * (MAX_DIMS - len(shape))


def pool_grad_options(kind: str, in_shape, out_shape, kernel, stride, padding) -> bytes:
    """kind "average" or "max"; shapes NHWC; padding (top, left)."""
    batches, in_h, in_w, channels = in_shape
    return struct.pack(
        "<BB" + "i" * 12,
        OPTIONS_VERSION,
        {"average": 0, "max": 1}[kind],
        batches, in_h, in_w, channels, out_shape[1], out_shape[2], *kernel, *stride, *padding,
    )


def mean_grad_options(in_shape, reduced_axes) -> bytes:
    mask = sum(1 << a for a in reduced_axes)
    return struct.pack("<BBB" + "i" * MAX_DIMS, OPTIONS_VERSION, len(in_shape), mask, *_dims(in_shape))


def crop_options(src_shape, begin, dst_shape) -> bytes:
    begin = [int(b) for b in begin] + [0] * (MAX_DIMS - len(begin))
    return struct.pack(
        "<BB" + "i" * (3 * MAX_DIMS), OPTIONS_VERSION, len(src_shape), *_dims(src_shape), *begin, *_dims(dst_shape)
    )


BROADCAST_KINDS = {"add": 0, "subtract": 1, "multiply": 2}


def broadcast_grad_options(kind: str, out_shape, in_shape, other_shape) -> bytes:
    """Shapes aligned to the output's rank (leading 1s added by the caller)."""
    return struct.pack(
        "<BBB" + "i" * (3 * MAX_DIMS),
        OPTIONS_VERSION,
        BROADCAST_KINDS[kind],
        len(out_shape),
        *_dims(out_shape),
        *_dims(in_shape),
        *_dims(other_shape),
    )
