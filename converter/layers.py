"""Reading a fully-connected layer out of a model, frozen or already adapted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter.config import ConversionError
from tflm_train.converter.matching import layer_name
from tflm_train.converter.model_ir import Model, Quant


@dataclass
class DenseLayer:
    """A stock FULLY_CONNECTED with constant weights, and its real values."""

    op: schema.OperatorT
    index: int
    name: str
    x: int
    weights: int
    bias: int  # -1 when the layer has none
    y: int
    activation: int
    in_features: int
    units: int
    batches: int
    weights_real: np.ndarray  # float32 [units, in_features], dequantized
    bias_real: np.ndarray | None  # float32 [units], dequantized


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


def dense_layer(model: Model, index: int) -> DenseLayer:
    op = model.operators[index]
    kind = model.op_type(op)
    if kind != "FULLY_CONNECTED":
        raise ConversionError(f"operator {index} is {kind}, not FULLY_CONNECTED")
    inputs = model.inputs_of(op)
    x, weights = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else -1
    y = model.outputs_of(op)[0]
    options = op.builtinOptions
    activation = options.fusedActivationFunction if options is not None else 0
    if options is not None and options.weightsFormat != 0:
        raise ConversionError(f"operator {index}: shuffled FULLY_CONNECTED weights are not supported")
    weight_values = model.constant(weights)
    if weight_values is None:
        raise ConversionError(f"operator {index}: FULLY_CONNECTED weights are not constant")
    if weight_values.dtype not in (np.float32, np.int8):
        raise ConversionError(f"operator {index}: {weight_values.dtype} weights are not supported (float32 and int8 are)")
    units, in_features = weight_values.shape
    x_size = int(np.prod(model.shape(x)))
    if x_size % in_features:
        raise ConversionError(f"operator {index}: input size {x_size} is not a multiple of {in_features}")
    weight_quant = model.quant(weights)
    weights_real = dequantize(weight_values, weight_quant, axis=0)
    bias_real = None
    if bias >= 0:
        bias_values = model.constant(bias)
        if bias_values is None:
            raise ConversionError(f"operator {index}: FULLY_CONNECTED bias is not constant")
        if bias_values.dtype == np.int32:
            input_quant = model.quant(x)
            if input_quant is None or weight_quant is None:
                raise ConversionError(f"operator {index}: int32 bias without input and weight scales")
            scale = float(input_quant.scale[0]) * weight_quant.scale.astype(np.float64)
            bias_real = (bias_values.astype(np.float64) * scale).astype(np.float32)
        else:
            bias_real = bias_values.astype(np.float32)
    name = layer_name(model, index)
    return DenseLayer(
        op=op,
        index=index,
        name=name,
        x=x,
        weights=weights,
        bias=bias,
        y=y,
        activation=int(activation),
        in_features=int(in_features),
        units=int(units),
        batches=x_size // in_features,
        weights_real=weights_real,
        bias_real=bias_real,
    )


def short_name(name: str) -> str:
    """A readable layer name: the first path of a converter name, trimmed."""
    first = name.split(";")[0]
    parts = [p for p in first.split("/") if p]
    for suffix in ("MatMul", "BiasAdd", "Relu", "Relu6", "Tanh", "Sigmoid", "Softmax"):
        if len(parts) > 1 and parts[-1].startswith(suffix):
            parts = parts[:-1]
    return "/".join(parts[-2:]) if parts else first
