"""SOFTMAX (with its beta): TFLMT_SOFTMAX_GRAD from dy and the output."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tflm_train.converter import ops
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.gradients import Step, rule

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward


@rule("SOFTMAX")
def softmax(bw: Backward, step: Step) -> None:
    op = step.op
    x, y = bw.model.inputs_of(op)[0], bw.model.outputs_of(op)[0]
    options = op.builtinOptions
    if options is not None and not hasattr(options, "beta"):
        raise ConversionError("a SOFTMAX carries another operator's options (the model is corrupt)")
    beta = options.beta if options is not None else 1.0
    dx = bw.grad_tensor(x)
    bw.emit(ops.SOFTMAX_GRAD, [step.dy, y, bw.mode], [dx], custom_options=ops.softmax_grad_options(beta))
    bw.contribute(x, dx)
