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
ADAPTER = "TFLMT_ADAPTER"
ADAPTER_GRAD = "TFLMT_ADAPTER_GRAD"
ACTIVATION_GRAD = "TFLMT_ACTIVATION_GRAD"
SOFTMAX_GRAD = "TFLMT_SOFTMAX_GRAD"
LOSS = "TFLMT_LOSS"
OPTIMIZER = "TFLMT_OPTIMIZER"
ADD_GRADS = "TFLMT_ADD_GRADS"

ALL_OPS = (
    STATE,
    FULLY_CONNECTED,
    FULLY_CONNECTED_GRAD,
    ADAPTER,
    ADAPTER_GRAD,
    ACTIVATION_GRAD,
    SOFTMAX_GRAD,
    LOSS,
    OPTIMIZER,
    ADD_GRADS,
)


class Mode(IntEnum):
    """Values of a converted model's `mode` input."""

    INFER = 0
    TRAIN = 1
    EVALUATE = 2


class Activation(IntEnum):
    """TFLite's fused activation numbering (ActivationFunctionType)."""

    NONE = 0
    RELU = 1
    RELU_N1_TO_1 = 2
    RELU6 = 3
    TANH = 4
    LOGISTIC = 100  # not fusable; used by the activation-gradient op


@dataclass
class FullyConnectedLayer:
    """Where each part of a fully-connected layer lives.

    Offsets count float32 values from the start of the state's parameters;
    -1 means the part is frozen in the model (or absent).
    """

    in_features: int
    units: int
    activation: int = Activation.NONE
    weight_offset: int = -1
    bias_offset: int = -1
    lora_rank: int = 0
    lora_a_offset: int = -1
    lora_b_offset: int = -1
    lora_scale: float = 0.0

    _FORMAT = "<BBiiiiiiif"

    @classmethod
    def from_options(cls, blob: bytes) -> "FullyConnectedLayer":
        fields = struct.unpack(cls._FORMAT, bytes(blob))
        if fields[0] != OPTIONS_VERSION:
            raise ValueError(f"options version {fields[0]}, expected {OPTIONS_VERSION}")
        activation, in_features, units, *rest = fields[1:]
        return cls(in_features, units, activation, *rest)

    def options(self) -> bytes:
        return struct.pack(
            self._FORMAT,
            OPTIONS_VERSION,
            int(self.activation),
            self.in_features,
            self.units,
            self.weight_offset,
            self.bias_offset,
            self.lora_rank,
            self.lora_a_offset,
            self.lora_b_offset,
            self.lora_scale,
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
