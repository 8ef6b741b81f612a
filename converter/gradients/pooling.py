"""AVERAGE_POOL_2D and MAX_POOL_2D: TFLMT_POOL_GRAD.

A global average pool of a linear layer's output made for it alone passes
only the per-channel mean down: the linear layer's backward op reads that
pooled gradient itself (Step.pooled), so the spread-out gradient is never
stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter import ops
from tflm_train.converter.gradients import Step, rule
from tflm_train.converter.gradients.activation import fused_activation
from tflm_train.converter.layers import same_padding

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward

POOLS = {"AVERAGE_POOL_2D": "average", "MAX_POOL_2D": "max"}


@rule(*POOLS)
def pool(bw: Backward, step: Step) -> None:
    op, kind, model = step.op, POOLS[step.kind], bw.model
    grad = fused_activation(bw, op, step.dy)
    x, y = model.inputs_of(op)[0], model.outputs_of(op)[0]
    options = op.builtinOptions
    x_shape, y_shape = model.shape(x), model.shape(y)
    if kind == "average" and tuple(y_shape[1:3]) == (1, 1) and options.padding == schema.Padding.VALID \
            and bw.pools_a_linear_layer(op, x):
        bw.pooled[x] = grad
        return
    kernel = (options.filterHeight, options.filterWidth)
    stride = (options.strideH, options.strideW)
    _, pad_top = same_padding(x_shape[1], kernel[0], stride[0], 1, options.padding)
    _, pad_left = same_padding(x_shape[2], kernel[1], stride[1], 1, options.padding)
    dx = bw.grad_tensor(x)
    blob = ops.pool_grad_options(kind, x_shape, y_shape, kernel, stride, (pad_top, pad_left))
    # Average pooling needs only shapes: no activation is kept alive for it.
    inputs = [grad, x, y, bw.mode] if kind == "max" else [grad, -1, -1, bw.mode]
    bw.emit(ops.POOL_GRAD, inputs, [dx], custom_options=blob)
    bw.contribute(x, dx)
