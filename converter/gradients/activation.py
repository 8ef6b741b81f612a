"""Standalone activations, and the fused activation of stock ops.

TFLMT_ACTIVATION_GRAD computes dx from dy and the activation's output y.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tflm_train.converter import ops
from tflm_train.converter.gradients import Step, rule

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward

ACTIVATIONS = {
    "RELU": ops.Activation.RELU,
    "RELU6": ops.Activation.RELU6,
    "RELU_N1_TO_1": ops.Activation.RELU_N1_TO_1,
    "TANH": ops.Activation.TANH,
    "LOGISTIC": ops.Activation.LOGISTIC,
}


def activation_grad(bw: Backward, op, activation: int, dy: int, x: int | None = None) -> int:
    """Emits dx = act'(y) * dy; x names the tensor dx is the gradient of."""
    y = bw.model.outputs_of(op)[0]
    dx = bw.grad_tensor(x if x is not None else bw.model.inputs_of(op)[0])
    bw.emit(ops.ACTIVATION_GRAD, [dy, y, bw.mode], [dx], custom_options=ops.activation_grad_options(activation))
    return dx


def fused_activation(bw: Backward, op, dy: int) -> int:
    """dy before the op's fused activation (dy itself when there is none)."""
    options = op.builtinOptions
    activation = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
    if activation == ops.Activation.NONE:
        return dy
    y = bw.model.outputs_of(op)[0]
    return activation_grad(bw, op, activation, dy, x=y)


@rule(*ACTIVATIONS)
def activation(bw: Backward, step: Step) -> None:
    dx = activation_grad(bw, step.op, ACTIVATIONS[step.kind], step.dy)
    bw.contribute(bw.model.inputs_of(step.op)[0], dx)
