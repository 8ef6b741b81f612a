"""PAD / PADV2 and CONCATENATION: their input gradients are crops of dy.

TFLMT_CROP copies the window of dy that the input's values went to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tflm_train.converter import ops
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.gradients import Step, rule
from tflm_train.converter.gradients.activation import fused_activation

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward


def _crop(bw: Backward, dy: int, src_shape, begin, x: int) -> None:
    dx = bw.grad_tensor(x)
    bw.emit(ops.CROP, [dy, bw.mode], [dx], custom_options=ops.crop_options(src_shape, begin, bw.model.shape(x)))
    bw.contribute(x, dx)


@rule("PAD", "PADV2")
def pad(bw: Backward, step: Step) -> None:
    model = bw.model
    x, paddings = model.inputs_of(step.op)[:2]
    values = model.constant(paddings)
    if values is None:
        raise ConversionError("PAD with computed paddings has no gradient in tflm-train")
    y = model.outputs_of(step.op)[0]
    _crop(bw, step.dy, model.shape(y), [int(before) for before, _ in values], x)


@rule("CONCATENATION")
def concatenation(bw: Backward, step: Step) -> None:
    model, op = bw.model, step.op
    grad = fused_activation(bw, op, step.dy)
    y_shape = model.shape(model.outputs_of(op)[0])
    axis = op.builtinOptions.axis % len(y_shape)
    offset = 0
    for t in model.inputs_of(op):
        if t in bw.need_grad:
            begin = [0] * len(y_shape)
            begin[axis] = offset
            _crop(bw, grad, y_shape, begin, t)
        offset += model.shape(t)[axis]
