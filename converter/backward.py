"""Reverse-mode differentiation of the forward graph, written as operators.

Starting from the gradient the loss op produces, walks the forward operators
in reverse and, for each one that lies between a trainable operator and the
loss, appends the operators that compute the gradient of its inputs (and of
its trainable parameters, which the kernels add into the state). Gradients
are float32 tensors shaped like the forward tensor they belong to; where a
tensor feeds several operators, its gradient contributions are summed with
stock ADD ops. No gradient is made for a tensor nothing trainable lies
behind, so the deepest adapter computes no input gradient and frozen layers
before it get no backward ops at all.
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.config import ConversionError
from tflm_train.converter.layers import LINEAR_OPS, linear_target
from tflm_train.converter.rewrite import Rewrite

ACTIVATIONS = {
    "RELU": ops.Activation.RELU,
    "RELU6": ops.Activation.RELU6,
    "RELU_N1_TO_1": ops.Activation.RELU_N1_TO_1,
    "TANH": ops.Activation.TANH,
    "LOGISTIC": ops.Activation.LOGISTIC,
}
# Identity on real values, up to shape: no backward op at all.
IDENTITIES = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
OUR_LINEAR_OPS = {ops.FULLY_CONNECTED, ops.CONV_2D, ops.DEPTHWISE_CONV_2D}
SUPPORTED = set(LINEAR_OPS) | OUR_LINEAR_OPS | {ops.ADAPTER, "SOFTMAX", "ADD"} | set(ACTIVATIONS) | IDENTITIES


class Backward:
    def __init__(self, rw: Rewrite, mode: int, origin: dict[int, int]):
        self.rw = rw
        self.model = rw.model
        self.mode = mode
        self.origin = origin  # id(op) -> index in the original model
        self.contributions: dict[int, list[int]] = {}
        self.need_grad: set[int] = set()

    # ---- analysis -------------------------------------------------------------
    def _plan(self, forward: list, loss_input: int) -> None:
        trainable = {id(op) for op in self.rw.trainable_ops}
        influenced: set[int] = set()
        for op in forward:
            inputs = [t for t in self.model.inputs_of(op) if t >= 0]
            if id(op) in trainable or any(t in influenced for t in inputs):
                influenced.update(self.model.outputs_of(op))
        reaches_loss = {loss_input}
        for op in reversed(forward):
            if any(t in reaches_loss for t in self.model.outputs_of(op)):
                reaches_loss.update(t for t in self.model.inputs_of(op) if t >= 0)
        self.need_grad = influenced & reaches_loss
        for op in self.rw.trainable_ops:
            if self.model.outputs_of(op)[0] not in self.need_grad:
                raise ConversionError(
                    f"the adapted layer at operator {self.origin.get(id(op), '?')} does not feed the loss"
                )

    # ---- emission helpers -------------------------------------------------------
    def _grad_tensor(self, forward_tensor: int) -> int:
        name = self.model.tensor_name(forward_tensor) + "/grad"
        return self.model.add_tensor(name, self.model.shape(forward_tensor), np.float32)

    def _emit(self, op_type: str, inputs, outputs, **kwargs) -> None:
        self.model.append_op(op_type, inputs, outputs, **kwargs)

    def _contribute(self, tensor: int, grad: int) -> None:
        if tensor in self.need_grad:
            self.contributions.setdefault(tensor, []).append(grad)

    def _gradient_of(self, tensor: int) -> int:
        """The summed gradient of a tensor, once all its readers are done."""
        parts = self.contributions.pop(tensor)
        if len(parts) == 1:
            return parts[0]
        total = self._grad_tensor(tensor)
        self._emit(ops.ADD_GRADS, [self.mode] + parts, [total], custom_options=ops.version_only_options())
        return total

    # ---- rules, one per forward op type ---------------------------------------------
    def _linear(self, op, kind: str, dy: int) -> None:
        """FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D, stock or ours."""
        inputs = self.model.inputs_of(op)
        outputs = self.model.outputs_of(op)
        x, y = inputs[0], outputs[0]
        if kind in LINEAR_OPS:  # a frozen stock layer: input gradient only
            layer = linear_target(self.model, self.model.operators.index(op)).layer
            weights, state, hidden = inputs[1], -1, -1
        else:
            layer = ops.LinearLayer.from_options(op.customOptions)
            weights = inputs[1] if layer.weight_offset < 0 else -1
            state = inputs[3]
            hidden = outputs[1] if len(outputs) > 1 else -1
        trainable = layer.weight_offset >= 0 or layer.bias_offset >= 0 or layer.lora_rank > 0
        dx_outputs = []
        if x in self.need_grad:
            dx = self._grad_tensor(x)
            dx_outputs = [dx]
            self._contribute(x, dx)
        if not dx_outputs and not trainable:
            return
        y_input = y if layer.activation != ops.Activation.NONE else -1
        self._emit(
            layer.grad_op,
            [dy, x, y_input, weights, state if trainable else -1, self.mode, hidden],
            dx_outputs,
            custom_options=layer.options(),
        )

    def _adapter(self, op, dy: int) -> None:
        x, state = self.model.inputs_of(op)
        hidden = self.model.outputs_of(op)[1]
        outputs = []
        if x in self.need_grad:
            dx = self._grad_tensor(x)
            outputs = [dx]
            self._contribute(x, dx)
        self._emit(ops.ADAPTER_GRAD, [dy, x, hidden, state, self.mode], outputs, custom_options=bytes(op.customOptions))

    def _activation(self, op, activation: int, dy: int, x: int | None = None) -> int:
        y = self.model.outputs_of(op)[0]
        dx = self._grad_tensor(x if x is not None else self.model.inputs_of(op)[0])
        self._emit(ops.ACTIVATION_GRAD, [dy, y, self.mode], [dx], custom_options=ops.activation_grad_options(activation))
        return dx

    def _softmax(self, op, dy: int) -> None:
        x, y = self.model.inputs_of(op)[0], self.model.outputs_of(op)[0]
        beta = op.builtinOptions.beta if op.builtinOptions is not None else 1.0
        dx = self._grad_tensor(x)
        self._emit(ops.SOFTMAX_GRAD, [dy, y, self.mode], [dx], custom_options=ops.softmax_grad_options(beta))
        self._contribute(x, dx)

    def _add(self, op, index: int, dy: int) -> None:
        y = self.model.outputs_of(op)[0]
        activation = op.builtinOptions.fusedActivationFunction if op.builtinOptions is not None else 0
        for t in self.model.inputs_of(op):
            if t in self.need_grad and self.model.shape(t) != self.model.shape(y):
                raise ConversionError(
                    f"operator {index} (ADD) broadcasts {self.model.shape(t)} to {self.model.shape(y)}; "
                    "gradients of broadcasting ADD are not supported yet"
                )
        grad = self._activation(op, activation, dy, x=y) if activation != ops.Activation.NONE else dy
        for t in self.model.inputs_of(op):
            self._contribute(t, grad)

    # ---- driver -------------------------------------------------------------------------
    def build(self, forward: list, loss_input: int, loss_grad: int) -> None:
        self._plan(forward, loss_input)
        self.contributions[loss_input] = [loss_grad]
        for op in reversed(forward):
            outputs = self.model.outputs_of(op)
            if not outputs or outputs[0] not in self.contributions:
                continue
            kind = self.model.op_type(op)
            index = self.origin.get(id(op), "?")
            if kind not in SUPPORTED:
                raise ConversionError(
                    f"operator {index} ({kind}) lies between the adapted layers and the loss "
                    "and has no gradient in tflm-train yet"
                )
            dy = self._gradient_of(outputs[0])
            if kind in LINEAR_OPS or kind in OUR_LINEAR_OPS:
                self._linear(op, kind, dy)
            elif kind == ops.ADAPTER:
                self._adapter(op, dy)
            elif kind in ACTIVATIONS:
                self._contribute(self.model.inputs_of(op)[0], self._activation(op, ACTIVATIONS[kind], dy))
            elif kind == "SOFTMAX":
                self._softmax(op, dy)
            elif kind in IDENTITIES:
                # Same values (or the same real values) in another shape or
                # type: gradient ops read gradients as flat float32, so the
                # gradient of y serves as the gradient of x unchanged.
                self._contribute(self.model.inputs_of(op)[0], dy)
            elif kind == "ADD":
                self._add(op, index, dy)


