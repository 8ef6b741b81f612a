"""Reading a linear layer (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D) out of a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter import ops
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.matching import layer_name
from tflm_train.converter.model_ir import Model, Quant

LINEAR_OPS = {
    "FULLY_CONNECTED": ops.LinearKind.FULLY_CONNECTED,
    "CONV_2D": ops.LinearKind.CONV_2D,
    "DEPTHWISE_CONV_2D": ops.LinearKind.DEPTHWISE_CONV_2D,
}


@dataclass
class LinearTarget:
    """A stock linear layer with constant weights, and its real values."""

    op: schema.OperatorT
    index: int
    name: str  # the most telling tensor name (matching.layer_name)
    short: str  # unique_layer_name: names its adapters and state tensors
    x: int
    weights: int
    bias: int  # -1 when the layer has none
    y: int
    layer: ops.LinearLayer  # kind, geometry and activation; nothing trainable yet
    weights_real: np.ndarray  # float32, TFLite filter layout, dequantized
    bias_real: np.ndarray | None  # float32 [out_channels], dequantized
    batches: int = 1

    @property
    def kind(self) -> int:
        return self.layer.kind

    @property
    def activation(self) -> int:
        return self.layer.activation

    @property
    def in_features(self) -> int:
        return self.layer.in_channels

    @property
    def units(self) -> int:
        return self.layer.out_channels

    @property
    def rows(self) -> int:
        """Output positions (batches x height x width): rows of the low-rank terms."""
        return self.layer.out_size[0] * self.layer.out_size[1] * self.batches


def dequantize(values: np.ndarray, quant: Quant | None, axis: int = 0) -> np.ndarray:
    """Real values of an integer tensor (per-tensor or per-channel along axis)."""
    if quant is None or values.dtype == np.float32:
        return values.astype(np.float32)
    scale = quant.scale.astype(np.float64)
    zero = quant.zero_point.astype(np.float64)
    if quant.per_channel:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


def same_padding(size: int, kernel: int, stride: int, dilation: int, padding: int) -> tuple[int, int]:
    """(output size, padding before) for TFLite's SAME (0) / VALID (1) rule."""
    effective = (kernel - 1) * dilation + 1
    if padding == schema.Padding.VALID:
        return (size - effective + stride) // stride, 0
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2


def linear_target(model: Model, index: int) -> LinearTarget:
    op = model.operators[index]
    op_type = model.op_type(op)
    if op_type not in LINEAR_OPS:
        raise ConversionError(f"operator {index} is {op_type}, not a FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D")
    kind = LINEAR_OPS[op_type]
    inputs = model.inputs_of(op)
    outputs = model.outputs_of(op)
    if len(inputs) < 2 or inputs[0] < 0 or inputs[1] < 0 or not outputs:
        raise ConversionError(f"operator {index}: {op_type} needs an input, weights and an output (the model is corrupt)")
    x, weights = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else -1
    y = outputs[0]
    options = op.builtinOptions
    expected_options = {
        ops.LinearKind.FULLY_CONNECTED: schema.FullyConnectedOptionsT,
        ops.LinearKind.CONV_2D: schema.Conv2DOptionsT,
        ops.LinearKind.DEPTHWISE_CONV_2D: schema.DepthwiseConv2DOptionsT,
    }[kind]
    if options is not None and not isinstance(options, expected_options):
        raise ConversionError(f"operator {index}: {op_type} carries another operator's options (the model is corrupt)")
    if options is None and kind != ops.LinearKind.FULLY_CONNECTED:
        raise ConversionError(f"operator {index}: {op_type} has no options (the model is corrupt)")
    weight_values = model.constant(weights)
    if weight_values is None:
        raise ConversionError(f"operator {index}: {op_type} weights are not constant")
    expected_rank = 2 if kind == ops.LinearKind.FULLY_CONNECTED else 4
    if weight_values.ndim != expected_rank:
        raise ConversionError(
            f"operator {index}: {op_type} weights have rank {weight_values.ndim}, not {expected_rank} (the model is corrupt)"
        )
    if weight_values.dtype not in (np.float32, np.int8):
        raise ConversionError(f"operator {index}: {weight_values.dtype} weights are not supported (float32 and int8 are)")
    activation = int(options.fusedActivationFunction) if options is not None else 0
    if activation not in (0, 1, 2, 3, 4):
        raise ConversionError(f"operator {index}: fused activation {activation} is not supported")
    batches = 1
    if kind == ops.LinearKind.FULLY_CONNECTED:
        if options is not None and options.weightsFormat != 0:
            raise ConversionError(f"operator {index}: shuffled FULLY_CONNECTED weights are not supported")
        units, in_features = weight_values.shape
        x_size = int(np.prod(model.shape(x)))
        if x_size % in_features:
            raise ConversionError(f"operator {index}: input size {x_size} is not a multiple of {in_features}")
        batches = x_size // in_features
        layer = ops.LinearLayer.fully_connected(int(in_features), int(units), activation)
        channel_axis = 0
    else:
        x_shape, y_shape = model.shape(x), model.shape(y)
        if len(x_shape) != 4 or len(y_shape) != 4:
            raise ConversionError(f"operator {index}: {op_type} input and output must be NHWC")
        stride = (int(options.strideH), int(options.strideW))
        dilation = (int(options.dilationHFactor or 1), int(options.dilationWFactor or 1))
        if kind == ops.LinearKind.CONV_2D:
            out_c, k_h, k_w, in_c = weight_values.shape
            if in_c != x_shape[3]:
                raise ConversionError(f"operator {index}: grouped convolutions are not supported")
            channel_axis = 0
        else:
            _, k_h, k_w, out_c = weight_values.shape
            in_c = x_shape[3]
            channel_axis = 3
        out_h, pad_top = same_padding(x_shape[1], k_h, stride[0], dilation[0], options.padding)
        out_w, pad_left = same_padding(x_shape[2], k_w, stride[1], dilation[1], options.padding)
        if (out_h, out_w) != tuple(y_shape[1:3]):
            raise ConversionError(f"operator {index}: output {y_shape} does not follow from the padding rule")
        batches = x_shape[0]
        layer = ops.LinearLayer(
            kind=kind,
            in_channels=int(in_c),
            out_channels=int(out_c),
            activation=activation,
            kernel=(int(k_h), int(k_w)),
            stride=stride,
            dilation=dilation,
            padding=(pad_top, pad_left),
            depth_multiplier=int(out_c) // int(in_c) if kind == ops.LinearKind.DEPTHWISE_CONV_2D else 1,
            out_size=(out_h, out_w),
        )
    weight_quant = model.quant(weights)
    weights_real = dequantize(weight_values, weight_quant, axis=channel_axis)
    bias_real = None
    if bias >= 0:
        bias_values = model.constant(bias)
        if bias_values is None:
            raise ConversionError(f"operator {index}: {op_type} bias is not constant")
        if bias_values.dtype == np.int32:
            input_quant = model.quant(x)
            if input_quant is None or weight_quant is None:
                raise ConversionError(f"operator {index}: int32 bias without input and weight scales")
            scale = float(input_quant.scale[0]) * weight_quant.scale.astype(np.float64)
            bias_real = (bias_values.astype(np.float64) * scale).astype(np.float32)
        else:
            bias_real = bias_values.astype(np.float32)
    target = LinearTarget(
        op=op,
        index=index,
        name=layer_name(model, index),
        short=unique_layer_name(model, index),
        x=x,
        weights=weights,
        bias=bias,
        y=y,
        layer=layer,
        weights_real=weights_real,
        bias_real=bias_real,
        batches=batches,
    )
    return target


# The last path segment TFLiteConverter gives the linear op itself; a fused
# name lists it after the activation's and the batch norm's.
_LINEAR_SEGMENTS = ("MatMul", "BiasAdd", "convolution", "Conv2D", "depthwise")
_TRIMMED_SEGMENTS = _LINEAR_SEGMENTS + ("Relu", "Relu6", "Tanh", "Sigmoid", "Softmax")


def short_name(name: str) -> str:
    """A readable layer name: the converter path of the linear op itself (the
    Keras layer, not its fused activation or batch norm), trimmed."""
    paths = [p for p in name.split(";") if p]
    own = [p for p in paths if p.rsplit("/", 1)[-1].startswith(_LINEAR_SEGMENTS)]
    first = own[0] if own else (paths[0] if paths else name)
    parts = [p for p in first.split("/") if p]
    if len(parts) > 1 and parts[-1].startswith(_TRIMMED_SEGMENTS):
        parts = parts[:-1]
    return "/".join(parts[-2:]) if parts else first


_LINEAR_OP_NAMES = set(LINEAR_OPS) | {ops.FULLY_CONNECTED, ops.CONV_2D, ops.DEPTHWISE_CONV_2D}


def unique_layer_name(model: Model, index: int) -> str:
    """short_name of a linear layer, with "#<operator index>" appended when
    another linear layer of the model reads the same (fused batch norms often
    do), so that names of adapters and state tensors never collide."""
    own = short_name(layer_name(model, index))
    for other, op in enumerate(model.operators):
        if other != index and model.op_type(op) in _LINEAR_OP_NAMES and short_name(layer_name(model, other)) == own:
            return f"{own}#{index}"
    return own
