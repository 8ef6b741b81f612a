"""Small hand-built models for kernel tests, run in the TFLM interpreter.

`Graph` builds a model whose inputs, constants and operators the test names,
with tflm-train's own model IR, and runs it in the tflite-micro interpreter
with our kernels (tflm_train.runtime.Interpreter). The stock int8 layers and
the layer geometry here are shared by the kernel tests and by
golden/make_golden.py (which records the stock kernels' int8 outputs the
TensorFlow gradients are taken at).
"""

from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter import ops
from tflm_train.converter.layers import same_padding
from tflm_train.converter.model_ir import Model, Quant
from tflm_train.converter.state_format import HEADER_BYTES, Header
from tflm_train.runtime import Interpreter


class Graph:
    def __init__(self):
        self.model = Model.empty()
        self._inputs: list[int] = []
        self._outputs: list[int] = []

    def input(self, name: str, shape, dtype=np.float32, quant: Quant | None = None) -> int:
        t = self.model.add_tensor(name, shape, dtype, quant=quant)
        self._inputs.append(t)
        return t

    def const(self, name: str, values: np.ndarray, quant: Quant | None = None) -> int:
        values = np.asarray(values)
        return self.model.add_tensor(name, values.shape, values.dtype, data=values, quant=quant)

    def tensor(self, name: str, shape, dtype=np.float32, quant: Quant | None = None) -> int:
        return self.model.add_tensor(name, shape, dtype, quant=quant)

    def state(self, params: np.ndarray, slots: int = 0) -> int:
        """A training-state variable with these parameters (an input and an output)."""
        nbytes = HEADER_BYTES + 4 * params.size * (2 + slots)
        t = self.model.add_tensor("state", [nbytes], np.uint8, is_variable=True)
        self._inputs.append(t)
        self._outputs.append(t)
        return t

    def op(self, op_type: str, inputs, outputs, options: bytes | None = None, **kwargs) -> None:
        self.model.append_op(op_type, inputs, outputs, custom_options=options, **kwargs)

    def output(self, tensor: int) -> int:
        self._outputs.append(tensor)
        return tensor

    def build(self) -> bytes:
        self.model.main.inputs = list(self._inputs)
        self.model.main.outputs = list(self._outputs)
        return self.model.sealed_bytes()  # with the checksum convert writes

    def run(self, feeds: dict[int, np.ndarray], arena_size: int | None = None) -> dict[int, np.ndarray]:
        """Invokes once with `feeds` (tensor -> value); returns every output."""
        interpreter = Interpreter(self.build(), arena_size=arena_size)
        for position, tensor in enumerate(self._inputs):
            interpreter.set_input(position, feeds[tensor])
        interpreter.invoke()
        return {tensor: interpreter.get_output(i) for i, tensor in enumerate(self._outputs)}


def state_blob(params: np.ndarray, slots: int = 0) -> np.ndarray:
    """Header (parameter count set) + parameters + zero gradients/slots."""
    params = np.asarray(params, np.float32).reshape(-1)
    header = Header(base_model_hash=1, layout_hash=2, payload_bytes=4 * params.size * (2 + slots), param_count=params.size)
    blob = header.pack() + params.tobytes() + bytes(4 * params.size * (1 + slots))
    return np.frombuffer(blob, np.uint8).copy()


def state_grads(blob: np.ndarray, count: int) -> np.ndarray:
    """The gradient area of a state output."""
    return np.frombuffer(blob.tobytes(), np.float32, count=count, offset=HEADER_BYTES + 4 * count).copy()


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(np.max(np.abs(want)), 1e-30)
    return float(np.max(np.abs(got - want)) / scale)


PADDING = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}


def conv_geometry(kind, x_shape, out_c, kernel, stride, dilation, padding: str, activation=0) -> ops.LinearLayer:
    """The LinearLayer of a CONV_2D / DEPTHWISE_CONV_2D on input x_shape."""
    _, h, w, c = x_shape
    out_h, pad_top = same_padding(h, kernel[0], stride[0], dilation[0], PADDING[padding])
    out_w, pad_left = same_padding(w, kernel[1], stride[1], dilation[1], PADDING[padding])
    return ops.LinearLayer(
        kind=kind,
        in_channels=c,
        out_channels=out_c,
        activation=activation,
        kernel=tuple(kernel),
        stride=tuple(stride),
        dilation=tuple(dilation),
        padding=(pad_top, pad_left),
        depth_multiplier=out_c // c if kind == ops.LinearKind.DEPTHWISE_CONV_2D else 1,
        out_size=(out_h, out_w),
    )


def int8_fully_connected_graph(x_q, w_q, w_scales, bias_q, x_quant, y_quant, activation, dy):
    """Stock int8 FULLY_CONNECTED forward, our gradient op backward."""
    batches, in_features = x_q.shape
    units = w_q.shape[0]
    g = Graph()
    tx = g.input("x", x_q.shape, np.int8, quant=x_quant)
    tdy = g.input("dy", dy.shape)
    tmode = g.input("mode", [1], np.int32)
    tw = g.const("w", w_q, quant=Quant.of(w_scales, 0))
    tb = g.const("b", bias_q, quant=Quant.of(x_quant.scale[0] * w_scales, 0))
    ty = g.output(g.tensor("y", [batches, units], np.int8, quant=y_quant))
    options = schema.FullyConnectedOptionsT()
    options.fusedActivationFunction = activation
    g.model.append_op(
        "FULLY_CONNECTED",
        [tx, tw, tb],
        [ty],
        builtin_options=options,
        builtin_options_type=schema.BuiltinOptions.FullyConnectedOptions,
    )
    tdx = g.output(g.tensor("dx", x_q.shape))
    layer = ops.LinearLayer.fully_connected(in_features, units, activation)
    g.op(ops.FULLY_CONNECTED_GRAD, [tdy, tx, ty if activation else -1, tw, -1, tmode, -1], [tdx], layer.options())
    return g, tx, tdy, tmode, ty, tdx


def stock_int8_conv(kind, layer, padding: str, x_q, w_q, w_scales, bias_q, x_quant, y_quant) -> np.ndarray:
    """The stock int8 CONV_2D / DEPTHWISE_CONV_2D on one input."""
    y_shape = (x_q.shape[0], *layer.out_size, layer.out_channels)
    g = Graph()
    tx = g.input("x", x_q.shape, np.int8, quant=x_quant)
    axis = 0 if kind == ops.LinearKind.CONV_2D else 3
    tw = g.const("w", w_q, quant=Quant.of(w_scales, 0, axis))
    tb = g.const("b", bias_q, quant=Quant.of(x_quant.scale[0] * w_scales, 0))
    ty = g.output(g.tensor("y", y_shape, np.int8, quant=y_quant))
    if kind == ops.LinearKind.CONV_2D:
        options, name, otype = schema.Conv2DOptionsT(), "CONV_2D", schema.BuiltinOptions.Conv2DOptions
    else:
        options, name, otype = schema.DepthwiseConv2DOptionsT(), "DEPTHWISE_CONV_2D", schema.BuiltinOptions.DepthwiseConv2DOptions
        options.depthMultiplier = layer.depth_multiplier
    options.padding = PADDING[padding]
    options.strideH, options.strideW = layer.stride
    options.dilationHFactor, options.dilationWFactor = layer.dilation
    options.fusedActivationFunction = layer.activation
    g.model.append_op(name, [tx, tw, tb], [ty], builtin_options=options, builtin_options_type=otype)
    return g.run({tx: x_q})[ty]
