"""A converted model's computation, rebuilt in TensorFlow: the reference for
the training and whole-model gradient cross-checks (tests marked `tf`,
golden/make_golden.py and benchmarks/run.py).

`run` executes a float .tflite op by op with TensorFlow ops, reading the
weights from the .tflite, so that tf.GradientTape differentiates it.
`ConvertedModel` adds what a conversion made trainable, with the initial
values of the converted model's state, as tf.Variables on the same layers
(LoRA A/B, biases, head or sparse weights, bottleneck adapters), and trains
them with Keras optimizers: the "same computation in TensorFlow".
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
LINEAR_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


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
    return model, {i: linear_target(model, i) for i, op in enumerate(model.operators) if model.op_type(op) in LINEAR_OPS}


def run(model_bytes: bytes, x: np.ndarray, trainable: dict[int, dict[str, tf.Variable]] | None = None,
        lora_scale: float = 0.0, logits: bool = False):
    """Output 0 of the float model for input x (with batch dim), in TF; with
    logits=True, the input of a final SOFTMAX instead. `trainable` maps an
    operator index to variables by state role (weight, bias, lora_A, lora_B,
    adapter_*), which replace or extend that layer."""
    model, targets = _parsed(model_bytes)
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
        if kind in LINEAR_OPS:
            target = targets[index]
            layer = target.layer
            xin = value(inputs[0])
            own = trainable.get(index, {})
            weights = own.get("weight", tf.constant(target.weights_real))
            if "weight_rows" in own:  # sparse: delta rows of some output channels
                weights = _with_channel_rows(layer, weights, own["weight_rows"], own["channels"])
            bias = own.get("bias", tf.constant(target.bias_real) if target.bias_real is not None else 0.0)
            lora = "lora_A" in own
            if kind == "FULLY_CONNECTED":
                flat = tf.reshape(xin, [-1, layer.in_channels])
                z = tf.matmul(flat, weights, transpose_b=True) + bias
                if lora:
                    hidden = tf.matmul(flat, own["lora_A"], transpose_b=True)
                    z = z + lora_scale * tf.matmul(hidden, own["lora_B"], transpose_b=True)
            else:
                padding = PADDING[options.padding]
                if lora and kind == "DEPTHWISE_CONV_2D":
                    delta = lora_scale * tf.matmul(own["lora_B"], own["lora_A"])  # [out, taps]
                    weights = weights + tf.reshape(tf.transpose(delta), layer.weight_shape())
                z = _conv(layer, xin, weights, padding) + bias
                if lora and kind == "CONV_2D":
                    hidden = _conv(layer, xin, own["lora_A"], padding)
                    z = z + lora_scale * tf.einsum("nhwr,or->nhwo", hidden, own["lora_B"])
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


def _with_channel_rows(layer, weights, rows, channels):
    """The frozen filter plus trained delta rows at the chosen output channels."""
    shape = layer.weight_shape()
    if layer.kind == ops.LinearKind.DEPTHWISE_CONV_2D:  # [1, kh, kw, out] -> [out, taps]
        by_channel = tf.transpose(tf.reshape(weights, [-1, shape[3]]))
    else:
        by_channel = tf.reshape(weights, [shape[0], -1])
    by_channel = tf.tensor_scatter_nd_add(by_channel, np.asarray(channels)[:, None], rows)
    if layer.kind == ops.LinearKind.DEPTHWISE_CONV_2D:
        return tf.reshape(tf.transpose(by_channel), shape)
    return tf.reshape(by_channel, shape)


def owner_index(metadata: dict, tensor: dict) -> int:
    """The operator index of the adapted layer a state tensor belongs to (a
    head's tensors are filed under "<layer>/head", the others under "<layer>")."""
    for adapted in metadata["adapted"]:
        if tensor["layer"] == adapted["name"] or tensor["layer"].startswith(adapted["name"] + "/"):
            return adapted["index"]
    raise KeyError(tensor["name"])


class ConvertedModel:
    """What a conversion trains, in TensorFlow: the base float .tflite (run)
    with the converted model's trainable tensors as variables, initialized
    from its state. The only way the cross-checks build the TF model."""

    def __init__(self, base_bytes: bytes, metadata: dict, params: np.ndarray):
        """params: the converted model's state parameters (state_format.parameters)."""
        self.base = base_bytes
        self.metadata = metadata
        config = metadata["config"]
        self.lora_scale = config["lora_alpha"] / config["r"] if config.get("r") else 0.0
        self.params = np.asarray(params, np.float32)
        self.tensors = metadata["state"]["tensors"]  # state order
        self.layers: dict[int, dict[str, tf.Variable]] = {}
        self.variables: list[tf.Variable] = []
        for t in self.tensors:
            values = self.params[t["offset"] : t["offset"] + int(np.prod(t["shape"]))].reshape(t["shape"])
            variable = tf.Variable(values)
            self.layers.setdefault(owner_index(metadata, t), {})[t["role"]] = variable
            if t["role"] == "weight_rows":
                adapted = next(a for a in metadata["adapted"] if a["index"] == owner_index(metadata, t))
                self.layers[adapted["index"]]["channels"] = adapted["channels"]
            self.variables.append(variable)

    def output(self, x: np.ndarray, logits: bool = True) -> tf.Tensor:
        """For one batch (x with batch dim); logits=True stops before a final SOFTMAX."""
        return run(self.base, np.asarray(x, np.float32), self.layers, self.lora_scale, logits=logits)

    def class_loss(self, x: np.ndarray, label: int) -> tf.Tensor:
        """Cross-entropy of one sample (no batch dim), as the converted model's "ce" loss."""
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return loss_fn(np.array([label]), self.output(x[None]))

    def gradients(self, loss_of) -> list[tf.Tensor]:
        """Gradients of loss_of() with respect to the variables, in state order."""
        with tf.GradientTape() as tape:
            loss = loss_of()
        return tape.gradient(loss, self.variables)

    def train(self, xs, ys, optimizer: tf.keras.optimizers.Optimizer, accumulate: int = 1, clip: float = 0.0) -> None:
        """Sample by sample, as TrainableModel.train_step does: the mean
        gradient of `accumulate` samples, clipped by global norm, applied."""
        pending = []
        for x, y in zip(xs, ys):
            pending.append(self.gradients(lambda: self.class_loss(x, int(y))))
            if len(pending) == accumulate:
                grads = [tf.add_n([g[i] for g in pending]) / accumulate for i in range(len(self.variables))]
                if clip > 0:
                    grads, _ = tf.clip_by_global_norm(grads, clip)
                optimizer.apply_gradients(zip(grads, self.variables))
                pending = []

    def flat(self, values=None) -> np.ndarray:
        """The variables (or per-variable `values`, e.g. gradients) laid out as the state's parameters."""
        values = self.variables if values is None else values
        out = np.zeros(self.params.size, np.float32)
        for t, v in zip(self.tensors, values):
            out[t["offset"] : t["offset"] + int(np.prod(t["shape"]))] = np.asarray(v).ravel()
        return out
