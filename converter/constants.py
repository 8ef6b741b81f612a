"""Everything the converter and the kernels must agree on, in one place.

The C++ side is tflm_ops/kernels/constants.h (op names, options versions, the
enums) and tflm_ops/reference/types.h (Activation, LinearKind);
tests/test_constants.py parses those headers and fails when the two drift.
Options versions are the first byte of each op's options blob: bump an op's
version (here and in constants.h) when its blob layout or meaning changes.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# ---- Op names (the custom op code in the model) ------------------------------------
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
# Integer training (--arithmetic int8; converter/integer.py).
FULLY_CONNECTED_INT = "TFLMT_FULLY_CONNECTED_INT"
FULLY_CONNECTED_INT_GRAD = "TFLMT_FULLY_CONNECTED_INT_GRAD"
LOSS_INT = "TFLMT_LOSS_INT"
SGD_INT = "TFLMT_SGD_INT"

# In the order the plugin registers them (kernels.h AllKernels).
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
    FULLY_CONNECTED_INT,
    FULLY_CONNECTED_INT_GRAD,
    LOSS_INT,
    SGD_INT,
)

# ---- Options versions, one per op -------------------------------------------------------
OPTIONS_VERSIONS: dict[str, int] = {
    STATE: 1,
    FULLY_CONNECTED: 1,
    FULLY_CONNECTED_GRAD: 1,
    CONV_2D: 1,
    CONV_2D_GRAD: 1,
    DEPTHWISE_CONV_2D: 1,
    DEPTHWISE_CONV_2D_GRAD: 1,
    ADAPTER: 1,
    ADAPTER_GRAD: 1,
    ACTIVATION_GRAD: 1,
    SOFTMAX_GRAD: 1,
    LOSS: 1,
    OPTIMIZER: 1,
    ADD_GRADS: 1,
    POOL_GRAD: 1,
    MEAN_GRAD: 1,
    CROP: 1,
    BROADCAST_GRAD: 1,
    FULLY_CONNECTED_INT: 1,
    FULLY_CONNECTED_INT_GRAD: 1,
    LOSS_INT: 1,
    SGD_INT: 1,
}


# ---- Enums ----------------------------------------------------------------------------
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


class LossKind(IntEnum):
    SOFTMAX_CROSS_ENTROPY = 0
    MEAN_SQUARED_ERROR = 1
    BINARY_CROSS_ENTROPY = 2


class OptimizerKind(IntEnum):
    SGD = 0
    MOMENTUM = 1
    ADAM = 2


class RegularizerKind(IntEnum):
    """TFLMT_OPTIMIZER's penalty toward the starting parameters (options version 2)."""

    NONE = 0
    L2SP = 1  # lambda/2 |w - w0|^2
    EWC = 2  # lambda/2 sum F_i (w_i - w0_i)^2, F the Fisher diagonal in the model


class PoolKind(IntEnum):
    AVERAGE = 0
    MAX = 1


class BroadcastKind(IntEnum):
    ADD = 0
    SUBTRACT = 1  # the second operand of a SUB
    MULTIPLY = 2


class GradFlag(IntFlag):
    """Bits of a linear layer's flags byte (forward and _GRAD ops)."""

    DY_POOLED = 1  # backward: dy arrives pooled over the output positions
    ACTIVATION_MASK = 2  # forward writes, backward reads, a 1-bit activation mask


# The names the command line and configs use for the kinds above.
LOSS_KINDS = {"ce": LossKind.SOFTMAX_CROSS_ENTROPY, "mse": LossKind.MEAN_SQUARED_ERROR, "bce": LossKind.BINARY_CROSS_ENTROPY}
REGULARIZER_KINDS = {"none": RegularizerKind.NONE, "l2sp": RegularizerKind.L2SP, "ewc": RegularizerKind.EWC}
# TFLMT_OPTIMIZER options carrying a regularizer (C++ kOptimizerRegularizedVersion).
OPTIMIZER_REGULARIZED_VERSION = 2
# TFLMT_LOSS options carrying class weights (C++ kLossWeightedVersion).
LOSS_WEIGHTED_VERSION = 2
OPTIMIZER_KINDS = {"sgd": OptimizerKind.SGD, "momentum": OptimizerKind.MOMENTUM, "adam": OptimizerKind.ADAM}
POOL_KINDS = {"average": PoolKind.AVERAGE, "max": PoolKind.MAX}
BROADCAST_KINDS = {"add": BroadcastKind.ADD, "subtract": BroadcastKind.SUBTRACT, "multiply": BroadcastKind.MULTIPLY}

# Shape-only ops describe tensors of up to this many dimensions (reference::kMaxDims).
MAX_DIMS = 6
