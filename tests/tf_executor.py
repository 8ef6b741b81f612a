"""Runs a float .tflite graph in TensorFlow, with the adapters a conversion put in.

The reference for end-to-end gradient tests on whole models: the same
operators, the same weights (read from the .tflite), written with TensorFlow
ops so that tf.GradientTape differentiates them. LoRA terms are added to the
layers a converted model adapted, with the initial values of its state;
`trainable` does the same for the other methods (biases, head or sparse
weights, bottleneck adapters).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter import ops
from tflm_train.converter.layers import linear_target
from tflm_train.converter.model_ir import Model

ACTIVATION = {0: tf.identity, 1: tf.nn.relu, 2: lambda v: tf.clip_by_value(v, -1.0, 1.0), 3: tf.nn.relu6, 4: tf.tanh}
PADDING = {schema.Padding.SAME: "SAME", schema.Padding.VALID: "VALID"}


class Lora:
    """LoRA variables for one layer: A and B as in the state layout."""

    def __init__(self, a: np.ndarray, b: np.ndarray, scale: float):
        self.a, self.b, self.scale = tf.Variable(a), tf.Variable(b), scale


def _conv(layer: ops.LinearLayer, x, kernel_tflite, padding: str):
    if layer.kind == ops.LinearKind.CONV_2D:
        kernel = tf.transpose(kernel_tflite, [1, 2, 3, 0])
        return tf.nn.conv2d(x, kernel, [1, *layer.stride, 1], padding)
    k_h, k_w = layer.kernel
    kernel = tf.reshape(kernel_tflite, [k_h, k_w, layer.in_channels, layer.depth_multiplier])
    return tf.nn.depthwise_conv2d(x, kernel, [1, *layer.stride, 1], padding)


@functools.lru_cache(maxsize=8)
def _parsed(model_bytes: bytes) -> tuple[Model, dict]:
    """The model and its linear layers, read once: a timed eager step should
    cost TensorFlow's work, not the .tflite parse."""
    model = Model.from_bytes(model_bytes)
    kinds = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
    return model, {i: linear_target(model, i) for i, op in enumerate(model.operators) if model.op_type(op) in kinds}


def run(model_bytes: bytes, x: np.ndarray, lora: dict[int, Lora] | None = None, logits: bool = False,
        trainable: dict[int, dict[str, tf.Variable]] | None = None):
    """Output 0 of the float model for input x (with batch dim), in TF; with
    logits=True, the input of a final SOFTMAX instead. `trainable` maps an
    operator index to variables by state role (trainable_from_state)."""
    model, targets = _parsed(model_bytes)
    lora = lora or {}
    trainable = trainable or {}
    values = {int(model.main.inputs[0]): tf.constant(x)}

    def value(t):
        if t in values:
            return values[t]
        return tf.constant(model.constant(t))

    for index, op in enumerate(model.operators):
        kind = model.op_type(op)
        inputs = model.inputs_of(op)
        out = model.outputs_of(op)[0]
        options = op.builtinOptions
        act = ACTIVATION[getattr(options, "fusedActivationFunction", 0) if options is not None else 0]
        if kind in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
            target = targets[index]
            layer = target.layer
            xin = value(inputs[0])
            own = trainable.get(index, {})
            weights = own.get("weight", tf.constant(target.weights_real))
            bias = own.get("bias", tf.constant(target.bias_real) if target.bias_real is not None else 0.0)
            adapter = lora.get(index)
            if kind == "FULLY_CONNECTED":
                flat = tf.reshape(xin, [-1, layer.in_channels])
                z = tf.matmul(flat, weights, transpose_b=True) + bias
                if adapter:
                    hidden = tf.matmul(flat, adapter.a, transpose_b=True)
                    z = z + adapter.scale * tf.matmul(hidden, adapter.b, transpose_b=True)
            else:
                padding = PADDING[options.padding]
                if adapter and kind == "DEPTHWISE_CONV_2D":
                    delta = adapter.scale * tf.matmul(adapter.b, adapter.a)  # [out, taps]
                    weights = weights + tf.reshape(tf.transpose(delta), layer.weight_shape())
                z = _conv(layer, xin, weights, padding) + bias
                if adapter and kind == "CONV_2D":
                    hidden = _conv(layer, xin, adapter.a, padding)
                    z = z + adapter.scale * tf.einsum("nhwr,or->nhwo", hidden, adapter.b)
            y = act(z)
            if "adapter_down" in own:  # y + U relu(D y + bd) + bu, per position
                flat = tf.reshape(y, [-1, layer.out_channels])
                hidden = tf.nn.relu(tf.matmul(flat, own["adapter_down"], transpose_b=True) + own["adapter_down_bias"])
                y = flat + tf.matmul(hidden, own["adapter_up"], transpose_b=True) + own["adapter_up_bias"]
            values[out] = tf.reshape(y, model.shape(out))
        elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            pool = tf.nn.avg_pool2d if kind == "AVERAGE_POOL_2D" else tf.nn.max_pool2d
            values[out] = act(
                pool(value(inputs[0]), (options.filterHeight, options.filterWidth),
                     (options.strideH, options.strideW), PADDING[options.padding])
            )
        elif kind == "MEAN":
            axes = [int(a) for a in np.atleast_1d(model.constant(inputs[1]))]
            values[out] = tf.reduce_mean(value(inputs[0]), axis=axes, keepdims=bool(options.keepDims))
        elif kind in ("ADD", "SUB", "MUL"):
            a, b = value(inputs[0]), value(inputs[1])
            values[out] = act({"ADD": a + b, "SUB": a - b, "MUL": a * b}[kind])
        elif kind == "SOFTMAX":
            if logits and index == len(model.operators) - 1:
                return value(inputs[0])
            values[out] = tf.nn.softmax(options.beta * value(inputs[0]))
        elif kind in ("LOGISTIC", "TANH", "RELU", "RELU6"):
            fn = {"LOGISTIC": tf.sigmoid, "TANH": tf.tanh, "RELU": tf.nn.relu, "RELU6": tf.nn.relu6}[kind]
            values[out] = fn(value(inputs[0]))
        elif kind in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE", "DEQUANTIZE"):
            values[out] = tf.reshape(value(inputs[0]), model.shape(out))
        elif kind in ("PAD", "PADV2"):
            values[out] = tf.pad(value(inputs[0]), model.constant(inputs[1]))
        elif kind == "CONCATENATION":
            values[out] = act(tf.concat([value(t) for t in inputs], axis=options.axis))
        else:
            raise NotImplementedError(kind)
    return values[int(model.main.outputs[0])]


def lora_from_state(metadata: dict, params: np.ndarray, base_bytes: bytes) -> dict[int, Lora]:
    """LoRA variables keyed by operator index, from a converted model's state."""
    tensors = {t["name"]: t for t in metadata["state"]["tensors"]}
    scale = metadata["config"]["lora_alpha"] / metadata["config"]["r"]
    result = {}
    for adapted in metadata["adapted"]:
        a, b = tensors[f"{adapted['name']}/lora_A"], tensors[f"{adapted['name']}/lora_B"]

        def take(t):
            return params[t["offset"] : t["offset"] + int(np.prod(t["shape"]))].reshape(t["shape"])

        result[adapted["index"]] = Lora(take(a), take(b), scale)
    return result


def owner_index(metadata: dict, tensor: dict) -> int:
    """The operator index of the adapted layer a state tensor belongs to (a
    head's tensors are filed under "<layer>/head", the others under "<layer>")."""
    for adapted in metadata["adapted"]:
        if tensor["layer"] == adapted["name"] or tensor["layer"].startswith(adapted["name"] + "/"):
            return adapted["index"]
    raise KeyError(tensor["name"])


def trainable_from_state(metadata: dict, params: np.ndarray) -> dict[int, dict[str, tf.Variable]]:
    """A converted model's trainable tensors as TF variables, keyed by the
    operator index of the layer they belong to and by their state role."""
    result: dict[int, dict[str, tf.Variable]] = {}
    for t in metadata["state"]["tensors"]:
        values = params[t["offset"] : t["offset"] + int(np.prod(t["shape"]))].reshape(t["shape"])
        result.setdefault(owner_index(metadata, t), {})[t["role"]] = tf.Variable(values)
    return result
