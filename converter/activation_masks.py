"""Activation masks: trainable linear ops keep one bit per output, not y.

The backward op of a layer with a ReLU-like fused activation (RELU, RELU6,
RELU_N1_TO_1) needs only where the activation passed the gradient, not the
layer's output itself. This pass makes each such trainable forward op write
that as a bit mask (an extra uint8 output, flag GradFlag.ACTIVATION_MASK in its options), so
the output need not stay alive in the arena until the backward pass; the
backward rule (converter/gradients/linear.py) then reads the mask instead of
y. Runs after the method's rewrite and before the backward pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.constants import GradFlag
from tflm_train.converter.model_ir import Model

# Our trainable linear ops; the masks are written by their forward kernels.
OUR_LINEAR_OPS = frozenset({ops.FULLY_CONNECTED, ops.CONV_2D, ops.DEPTHWISE_CONV_2D})
MASK_ACTIVATIONS = frozenset({ops.Activation.RELU, ops.Activation.RELU6, ops.Activation.RELU_N1_TO_1})


def mask_of(model: Model, op) -> int:
    """The op's activation-mask tensor, or -1 when it writes none."""
    layer = ops.LinearLayer.from_options(op.customOptions)
    return model.outputs_of(op)[-1] if layer.grad_flags & GradFlag.ACTIVATION_MASK else -1


def apply(model: Model, trainable_ops: list) -> None:
    for op in trainable_ops:
        if model.op_type(op) not in OUR_LINEAR_OPS:
            continue
        layer = ops.LinearLayer.from_options(op.customOptions)
        if layer.activation not in MASK_ACTIVATIONS or layer.grad_flags & GradFlag.ACTIVATION_MASK:
            continue
        y = model.outputs_of(op)[0]
        mask_bytes = (int(np.prod(model.shape(y))) + 7) // 8
        mask = model.add_tensor(model.tensor_name(y) + "/activation_mask", [mask_bytes], np.uint8)
        op.outputs = np.asarray(list(model.outputs_of(op)) + [mask], dtype=np.int32)
        layer = dataclasses.replace(layer, grad_flags=layer.grad_flags | GradFlag.ACTIVATION_MASK)
        op.customOptions = np.frombuffer(layer.options(), dtype=np.uint8).copy()
