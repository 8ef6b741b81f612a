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

FULLY_CONNECTED = "TFLMT_FULLY_CONNECTED"
FULLY_CONNECTED_GRAD = "TFLMT_FULLY_CONNECTED_GRAD"

ALL_OPS = (FULLY_CONNECTED, FULLY_CONNECTED_GRAD)


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

    def options(self) -> bytes:
        return struct.pack(
            "<BBiiiiiiif",
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
