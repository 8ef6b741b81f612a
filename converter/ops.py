"""Option blobs of tflm-train's custom ops, and the names the converter uses.

The op names, options versions and enums are defined once, in
converter/constants.py (the C++ side: tflm_ops/kernels/constants.h; a test
keeps the two equal), and re-exported here so that `ops.FULLY_CONNECTED`,
`ops.Activation`, ... keep working. Each builder below writes its op's
options: its own version byte, then little-endian fields in the fixed order
the kernel's option reader expects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tflm_train.converter.constants import (  # noqa: F401 - re-exported
    ACTIVATION_GRAD,
    ADAPTER,
    ADAPTER_GRAD,
    ADD_GRADS,
    ALL_OPS,
    BROADCAST_GRAD,
    BROADCAST_KINDS,
    CONV_2D,
    CONV_2D_GRAD,
    CROP,
    DEPTHWISE_CONV_2D,
    DEPTHWISE_CONV_2D_GRAD,
    FULLY_CONNECTED,
    FULLY_CONNECTED_GRAD,
    FULLY_CONNECTED_INT,
    FULLY_CONNECTED_INT_GRAD,
    LOSS,
    LOSS_INT,
    LOSS_KINDS,
    MAX_DIMS,
    MEAN_GRAD,
    OPTIMIZER,
    OPTIMIZER_KINDS,
    OPTIMIZER_REGULARIZED_VERSION,
    LOSS_WEIGHTED_VERSION,
    OPTIONS_VERSIONS,
    REGULARIZER_KINDS,
    POOL_GRAD,
    POOL_KINDS,
    SGD_INT,
    SOFTMAX_GRAD,
    STATE,
    Activation,
    BroadcastKind,
    GradFlag,
    LinearKind,
    LossKind,
    Mode,
    OptimizerKind,
    PoolKind,
    RegularizerKind,
)

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
    # GradFlag bits: DY_POOLED (backward op: dy arrives pooled over the output
    # positions); ACTIVATION_MASK (both ops: the forward op writes a 1-bit
    # activation mask as its last output and the backward op reads it in
    # place of the output).
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
        """Reads the options of a forward or _GRAD linear op."""
        f = struct.unpack(cls._FORMAT, bytes(blob))
        forward_op, grad_op = _LINEAR_OPS[LinearKind(f[1])]
        if f[0] not in (OPTIONS_VERSIONS[forward_op], OPTIONS_VERSIONS[grad_op]):
            raise ValueError(f"options version {f[0]}, expected {OPTIONS_VERSIONS[forward_op]}")
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

    def options(self, op: str | None = None) -> bytes:
        """The options blob of `op` (default: the forward op; see grad_options)."""
        return struct.pack(
            self._FORMAT,
            OPTIONS_VERSIONS[op or self.forward_op],
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

    def grad_options(self) -> bytes:
        """The options blob of the layer's _GRAD op."""
        return self.options(self.grad_op)


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
        if fields[0] not in (OPTIONS_VERSIONS[ADAPTER], OPTIONS_VERSIONS[ADAPTER_GRAD]):
            raise ValueError(f"options version {fields[0]}, expected {OPTIONS_VERSIONS[ADAPTER]}")
        activation, *rest = fields[1:]
        return cls(*rest, activation=activation)

    def options(self, op: str = ADAPTER) -> bytes:
        """The options blob of `op` (TFLMT_ADAPTER or TFLMT_ADAPTER_GRAD)."""
        return struct.pack(
            self._FORMAT,
            OPTIONS_VERSIONS[op],
            int(self.activation),
            self.features,
            self.bottleneck,
            self.down_offset,
            self.down_bias_offset,
            self.up_offset,
            self.up_bias_offset,
        )

    def grad_options(self) -> bytes:
        return self.options(ADAPTER_GRAD)


def version_only_options(op: str = ADD_GRADS) -> bytes:
    """Options of an op that has none but the version byte (STATE, ADD_GRADS)."""
    return struct.pack("<B", OPTIONS_VERSIONS[op])


def activation_grad_options(activation: int) -> bytes:
    return struct.pack("<BB", OPTIONS_VERSIONS[ACTIVATION_GRAD], int(activation))


def softmax_grad_options(beta: float) -> bytes:
    return struct.pack("<Bf", OPTIONS_VERSIONS[SOFTMAX_GRAD], beta)


def loss_options(kind: str, pos_weight: float = 1.0, neg_weight: float = 1.0) -> bytes:
    """Version 1; with class weights (binary cross-entropy) version 2, which
    appends the positive and the negative weight as float32."""
    if pos_weight == 1.0 and neg_weight == 1.0:
        return struct.pack("<BB", OPTIONS_VERSIONS[LOSS], LOSS_KINDS[kind])
    return struct.pack("<BBff", LOSS_WEIGHTED_VERSION, LOSS_KINDS[kind], pos_weight, neg_weight)


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

    def options(self, regularizer: str = "none", reg_lambda: float = 0.0) -> bytes:
        """Version 1; with a regularizer (l2sp, ewc) version 2, which appends
        its kind and lambda."""
        fields = (
            OPTIMIZER_KINDS[self.kind],
            self.accumulate,
            self.clip_norm,
            self.momentum,
            self.beta1,
            self.beta2,
            self.epsilon,
        )
        if regularizer == "none":
            return struct.pack("<BBifffff", OPTIONS_VERSIONS[OPTIMIZER], *fields)
        return struct.pack(
            "<BBifffffBf", OPTIMIZER_REGULARIZED_VERSION, *fields, REGULARIZER_KINDS[regularizer], reg_lambda
        )


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
        OPTIONS_VERSIONS[POOL_GRAD],
        POOL_KINDS[kind],
        batches, in_h, in_w, channels, out_shape[1], out_shape[2], *kernel, *stride, *padding,
    )


def mean_grad_options(in_shape, reduced_axes) -> bytes:
    mask = sum(1 << a for a in reduced_axes)
    return struct.pack("<BBB" + "i" * MAX_DIMS, OPTIONS_VERSIONS[MEAN_GRAD], len(in_shape), mask, *_dims(in_shape))


def crop_options(src_shape, begin, dst_shape) -> bytes:
    begin = [int(b) for b in begin] + [0] * (MAX_DIMS - len(begin))
    return struct.pack(
        "<BB" + "i" * (3 * MAX_DIMS), OPTIONS_VERSIONS[CROP], len(src_shape), *_dims(src_shape), *begin, *_dims(dst_shape)
    )


def broadcast_grad_options(kind: str, out_shape, in_shape, other_shape) -> bytes:
    """Shapes aligned to the output's rank (leading 1s added by the caller)."""
    return struct.pack(
        "<BBB" + "i" * (3 * MAX_DIMS),
        OPTIONS_VERSIONS[BROADCAST_GRAD],
        BROADCAST_KINDS[kind],
        len(out_shape),
        *_dims(out_shape),
        *_dims(in_shape),
        *_dims(other_shape),
    )
