"""ADD / SUB / MUL with broadcasting: TFLMT_BROADCAST_GRAD.

Where an input of ADD already has the output's shape, dy passes to it
unchanged and no op is emitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tflm_train.converter import ops
from tflm_train.converter.gradients import Step, rule
from tflm_train.converter.gradients.activation import fused_activation

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward

ELEMENTWISE = {"ADD": "add", "SUB": "subtract", "MUL": "multiply"}


@rule(*ELEMENTWISE)
def elementwise(bw: Backward, step: Step) -> None:
    model, op, kind = bw.model, step.op, ELEMENTWISE[step.kind]
    grad = fused_activation(bw, op, step.dy)
    out_shape = list(model.shape(model.outputs_of(op)[0]))
    inputs = model.inputs_of(op)

    def aligned(t):
        shape = list(model.shape(t))
        return [1] * (len(out_shape) - len(shape)) + shape

    for position, t in enumerate(inputs):
        if t not in bw.need_grad:
            continue
        other = inputs[1 - position]
        operation = "subtract" if kind == "subtract" and position == 1 else ("multiply" if kind == "multiply" else "add")
        if operation == "add" and aligned(t) == out_shape:
            bw.contribute(t, grad)  # the gradient passes unchanged
            continue
        dx = bw.grad_tensor(t)
        options = ops.broadcast_grad_options(operation, out_shape, aligned(t), aligned(other))
        bw.emit(ops.BROADCAST_GRAD, [grad, other if operation == "multiply" else -1, bw.mode], [dx],
                custom_options=options)
        bw.contribute(t, dx)
