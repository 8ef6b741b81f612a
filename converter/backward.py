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

import dataclasses

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter import ops
from tflm_train.converter.config import ConversionError
from tflm_train.converter.layers import LINEAR_OPS, linear_target, same_padding
from tflm_train.converter.recompute import Recomputable
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
MASK_ACTIVATIONS = {ops.Activation.RELU, ops.Activation.RELU6, ops.Activation.RELU_N1_TO_1}
POOLED_FLAG = 1  # LinearLayer.grad_flags: dy is pooled over the output positions
MASK_FLAG = 2  # the forward op writes an activation mask; the backward op reads it
POOLS = {"AVERAGE_POOL_2D": "average", "MAX_POOL_2D": "max"}
ELEMENTWISE = {"ADD": "add", "SUB": "subtract", "MUL": "multiply"}
SUPPORTED = (
    set(LINEAR_OPS)
    | OUR_LINEAR_OPS
    | {ops.ADAPTER, "SOFTMAX", "MEAN", "PAD", "PADV2", "CONCATENATION"}
    | set(ACTIVATIONS)
    | IDENTITIES
    | set(POOLS)
    | set(ELEMENTWISE)
)


class Backward:
    def __init__(self, rw: Rewrite, mode: int, origin: dict[int, int]):
        self.rw = rw
        self.model = rw.model
        self.mode = mode
        self.origin = origin  # id(op) -> index in the original model
        self.contributions: dict[int, list[int]] = {}
        self.need_grad: set[int] = set()
        # Forward tensors whose gradient is only its average per channel: a
        # linear layer feeding a global average pool / MEAN reads the pooled
        # gradient itself, so the spread-out gradient is never stored.
        self.pooled: dict[int, int] = {}
        # Tensors a forward op keeps only for its backward op, which could
        # make them again instead (converter/recompute.py decides).
        self.recomputable: list[Recomputable] = []

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
        self.influenced = influenced
        for op in self.rw.trainable_ops:
            if self.model.outputs_of(op)[0] not in self.need_grad:
                raise ConversionError(
                    f"the adapted layer at operator {self.origin.get(id(op), '?')} does not feed the loss"
                )

    # ---- emission helpers -------------------------------------------------------
    def _grad_tensor(self, forward_tensor: int) -> int:
        name = self.model.tensor_name(forward_tensor) + "/grad"
        return self.model.add_tensor(name, self.model.shape(forward_tensor), np.float32)

    def _emit(self, op_type: str, inputs, outputs, **kwargs):
        return self.model.operators[self.model.append_op(op_type, inputs, outputs, **kwargs)]

    def _rows(self, hidden: int) -> int:
        """Rows of a hidden activation [..., width]. A single row is not worth
        recomputing: the ops would need a row of memory for it anyway."""
        return int(np.prod(self.model.shape(hidden)[:-1]))

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
    def _linear(self, op, kind: str, dy: int, pooled: bool = False) -> None:
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
            if layer.activation in MASK_ACTIVATIONS:
                # Our forward op writes a bit per output for the backward op,
                # so the layer's output need not stay alive until then.
                layer = dataclasses.replace(layer, grad_flags=layer.grad_flags | MASK_FLAG)
                mask_bytes = (int(np.prod(self.model.shape(y))) + 7) // 8
                y = self.model.add_tensor(self.model.tensor_name(y) + "/activation_mask", [mask_bytes], np.uint8)
                op.outputs = np.asarray(list(outputs) + [y], dtype=np.int32)
                op.customOptions = np.frombuffer(layer.options(), dtype=np.uint8).copy()
        trainable = layer.weight_offset >= 0 or layer.bias_offset >= 0 or layer.lora_rank > 0
        dx_outputs = []
        if x in self.need_grad:
            dx = self._grad_tensor(x)
            dx_outputs = [dx]
            self._contribute(x, dx)
        if not dx_outputs and not trainable:
            return
        y_input = y if layer.activation != ops.Activation.NONE else -1
        if pooled:
            layer = dataclasses.replace(layer, grad_flags=layer.grad_flags | POOLED_FLAG)
        # x only where weights or LoRA train: a layer's input is not kept alive
        # for a backward pass that does not read it.
        x_input = x if layer.weight_offset >= 0 or layer.lora_rank > 0 else -1
        grad_op = self._emit(
            layer.grad_op,
            [dy, x_input, y_input, weights, state if trainable else -1, self.mode, hidden],
            dx_outputs,
            custom_options=layer.options(),
        )
        if hidden >= 0 and self._rows(hidden) > 1:
            self.recomputable.append(Recomputable(op, grad_op, hidden, f"LoRA of {self.rw.layer_names[id(op)]}"))

    def _adapter(self, op, dy: int) -> None:
        x, state = self.model.inputs_of(op)
        hidden = self.model.outputs_of(op)[1]
        outputs = []
        if x in self.need_grad:
            dx = self._grad_tensor(x)
            outputs = [dx]
            self._contribute(x, dx)
        grad_op = self._emit(
            ops.ADAPTER_GRAD, [dy, x, hidden, state, self.mode], outputs, custom_options=bytes(op.customOptions)
        )
        if self._rows(hidden) > 1:
            self.recomputable.append(Recomputable(op, grad_op, hidden, f"adapter after {self.rw.layer_names[id(op)]}"))

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

    def _fused_activation(self, op, dy: int) -> int:
        """dy before the op's fused activation (dy itself when there is none)."""
        options = op.builtinOptions
        activation = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
        if activation == ops.Activation.NONE:
            return dy
        y = self.model.outputs_of(op)[0]
        return self._activation(op, activation, dy, x=y)

    def _elementwise(self, op, kind: str, dy: int) -> None:
        """ADD / SUB / MUL, broadcasting allowed."""
        grad = self._fused_activation(op, dy)
        y = self.model.outputs_of(op)[0]
        out_shape = list(self.model.shape(y))
        inputs = self.model.inputs_of(op)

        def aligned(t):
            shape = list(self.model.shape(t))
            return [1] * (len(out_shape) - len(shape)) + shape

        for position, t in enumerate(inputs):
            if t not in self.need_grad:
                continue
            other = inputs[1 - position]
            operation = "subtract" if kind == "subtract" and position == 1 else ("multiply" if kind == "multiply" else "add")
            if operation == "add" and aligned(t) == out_shape:
                self._contribute(t, grad)  # the gradient passes unchanged
                continue
            dx = self._grad_tensor(t)
            options = ops.broadcast_grad_options(operation, out_shape, aligned(t), aligned(other))
            self._emit(ops.BROADCAST_GRAD, [grad, other if operation == "multiply" else -1, self.mode], [dx],
                       custom_options=options)
            self._contribute(t, dx)

    def _pools_a_linear_layer(self, op, x: int) -> bool:
        """True when op averages all of x, made by a linear layer for it alone."""
        producer = self.producers.get(x)
        if producer is None or x not in self.need_grad:
            return False
        kind = self.model.op_type(self.model.operators[producer])
        return (kind in LINEAR_OPS or kind in OUR_LINEAR_OPS) and self.consumers.get(x) == [op]

    def _pool(self, op, kind: str, dy: int) -> None:
        grad = self._fused_activation(op, dy)
        x, y = self.model.inputs_of(op)[0], self.model.outputs_of(op)[0]
        options = op.builtinOptions
        x_shape, y_shape = self.model.shape(x), self.model.shape(y)
        if kind == "average" and tuple(y_shape[1:3]) == (1, 1) and options.padding == schema.Padding.VALID \
                and self._pools_a_linear_layer(op, x):
            self.pooled[x] = grad
            return
        kernel = (options.filterHeight, options.filterWidth)
        stride = (options.strideH, options.strideW)
        _, pad_top = same_padding(x_shape[1], kernel[0], stride[0], 1, options.padding)
        _, pad_left = same_padding(x_shape[2], kernel[1], stride[1], 1, options.padding)
        dx = self._grad_tensor(x)
        blob = ops.pool_grad_options(kind, x_shape, y_shape, kernel, stride, (pad_top, pad_left))
        # Average pooling needs only shapes: no activation is kept alive for it.
        inputs = [grad, x, y, self.mode] if kind == "max" else [grad, -1, -1, self.mode]
        self._emit(ops.POOL_GRAD, inputs, [dx], custom_options=blob)
        self._contribute(x, dx)

    def _mean(self, op, dy: int) -> None:
        x, axes_tensor = self.model.inputs_of(op)[:2]
        shape = self.model.shape(x)
        axes = self.model.constant(axes_tensor)
        if axes is None:
            raise ConversionError("MEAN with computed axes has no gradient in tflm-train")
        reduced = sorted({int(a) % len(shape) for a in np.atleast_1d(axes)})
        if len(shape) == 4 and reduced == [1, 2] and self._pools_a_linear_layer(op, x):
            self.pooled[x] = dy
            return
        dx = self._grad_tensor(x)
        self._emit(ops.MEAN_GRAD, [dy, self.mode], [dx], custom_options=ops.mean_grad_options(shape, reduced))
        self._contribute(x, dx)

    def _crop(self, dy: int, src_shape, begin, x: int) -> None:
        dx = self._grad_tensor(x)
        self._emit(ops.CROP, [dy, self.mode], [dx], custom_options=ops.crop_options(src_shape, begin, self.model.shape(x)))
        self._contribute(x, dx)

    def _pad(self, op, dy: int) -> None:
        x, paddings = self.model.inputs_of(op)[:2]
        values = self.model.constant(paddings)
        if values is None:
            raise ConversionError("PAD with computed paddings has no gradient in tflm-train")
        y = self.model.outputs_of(op)[0]
        self._crop(dy, self.model.shape(y), [int(before) for before, _ in values], x)

    def _concatenation(self, op, dy: int) -> None:
        grad = self._fused_activation(op, dy)
        y = self.model.outputs_of(op)[0]
        y_shape = self.model.shape(y)
        axis = op.builtinOptions.axis % len(y_shape)
        offset = 0
        for t in self.model.inputs_of(op):
            if t in self.need_grad:
                begin = [0] * len(y_shape)
                begin[axis] = offset
                self._crop(grad, y_shape, begin, t)
            offset += self.model.shape(t)[axis]

    # ---- driver -------------------------------------------------------------------------
    def build(self, forward: list, loss_input: int, loss_grad: int) -> None:
        self._plan(forward, loss_input)
        self.producers = {t: i for i, op in enumerate(self.model.operators) for t in self.model.outputs_of(op)}
        self.consumers: dict[int, list] = {}
        for op in forward:
            for t in self.model.inputs_of(op):
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)
        self.contributions[loss_input] = [loss_grad]
        for op in reversed(forward):
            outputs = self.model.outputs_of(op)
            if not outputs or (outputs[0] not in self.contributions and outputs[0] not in self.pooled):
                continue
            kind = self.model.op_type(op)
            index = self.origin.get(id(op), "?")
            if kind not in SUPPORTED:
                raise ConversionError(
                    f"operator {index} ({kind}) lies between the adapted layers and the loss "
                    "and has no gradient in tflm-train yet"
                )
            if outputs[0] in self.pooled:
                self._linear(op, kind, self.pooled.pop(outputs[0]), pooled=True)
                continue
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
            elif kind in ELEMENTWISE:
                self._elementwise(op, ELEMENTWISE[kind], dy)
            elif kind in POOLS:
                self._pool(op, POOLS[kind], dy)
            elif kind == "MEAN":
                self._mean(op, dy)
            elif kind in ("PAD", "PADV2"):
                self._pad(op, dy)
            elif kind == "CONCATENATION":
                self._concatenation(op, dy)


