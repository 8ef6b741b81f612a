"""TensorFlow implementations of what a converted model computes.

For MLP models (a chain of FULLY_CONNECTED layers ending in a SOFTMAX) this
rebuilds the forward pass in TensorFlow from the .tflite's own float weights,
adds the same adapters with the same initial values (read from the converted
model's initial state), and trains them with Keras optimizers - the
"same computation in TensorFlow" the training tests compare against.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tflm_train.converter.layers import linear_target
from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import Header, parameters

ACTIVATIONS = {0: tf.identity, 1: tf.nn.relu, 3: tf.nn.relu6, 4: tf.tanh}


def dense_chain(model_bytes: bytes) -> list[dict]:
    """The float MLP's layers in order: weights, bias, activation."""
    model = Model.from_bytes(model_bytes)
    chain = []
    for index, op in enumerate(model.operators):
        if model.op_type(op) == "FULLY_CONNECTED":
            layer = linear_target(model, index)
            chain.append({"w": layer.weights_real, "b": layer.bias_real, "act": layer.activation})
    return chain


class ReferenceModel:
    """The converted model's trainable computation, in TensorFlow."""

    def __init__(self, base_bytes: bytes, metadata: dict, initial_state: bytes):
        self.chain = dense_chain(base_bytes)
        config = metadata["config"]
        self.method = config["method"]
        self.scale = config["lora_alpha"] / config["r"]
        header = Header.unpack(initial_state)
        flat = parameters(initial_state, header)
        self.variables: dict[str, tf.Variable] = {}
        self.order: list[str] = []
        for t in metadata["state"]["tensors"]:
            values = flat[t["offset"] : t["offset"] + int(np.prod(t["shape"]))].reshape(t["shape"])
            self.variables[t["name"]] = tf.Variable(values)
            self.order.append(t["name"])
        # The adapted layers are the last ones of the chain, in order.
        layers = []
        for t in metadata["state"]["tensors"]:
            if t["layer"] not in layers:
                layers.append(t["layer"])
        self.adapted = {len(self.chain) - len(layers) + i: name for i, name in enumerate(layers)}

    def logits(self, x: np.ndarray) -> tf.Tensor:
        h = tf.constant(x[None].astype(np.float32))
        v = self.variables
        for i, layer in enumerate(self.chain):
            name = self.adapted.get(i)
            w = tf.constant(layer["w"])
            b = tf.constant(layer["b"]) if layer["b"] is not None else 0.0
            if name and self.method == "bias":
                b = v[f"{name}/bias"]
            if name and self.method == "head":
                w, b = v[f"{name}/kernel"], v[f"{name}/bias"]
            z = tf.matmul(h, w, transpose_b=True) + b
            if name and self.method == "lora":
                hidden = tf.matmul(h, v[f"{name}/lora_A"], transpose_b=True)
                z = z + self.scale * tf.matmul(hidden, v[f"{name}/lora_B"], transpose_b=True)
            h = ACTIVATIONS[layer["act"]](z)
            if name and self.method == "adapter":
                a = tf.nn.relu(tf.matmul(h, v[f"{name}/adapter_down"], transpose_b=True) + v[f"{name}/adapter_down_bias"])
                h = h + tf.matmul(a, v[f"{name}/adapter_up"], transpose_b=True) + v[f"{name}/adapter_up_bias"]
        return h

    def gradients(self, x: np.ndarray, label: int) -> list[tf.Tensor]:
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        with tf.GradientTape() as tape:
            loss = loss_fn(np.array([label]), self.logits(x))
        return tape.gradient(loss, [self.variables[n] for n in self.order])

    def train(self, xs, ys, optimizer: tf.keras.optimizers.Optimizer, accumulate: int = 1, clip: float = 0.0):
        pending = []
        for x, y in zip(xs, ys):
            pending.append(self.gradients(x, int(y)))
            if len(pending) == accumulate:
                grads = [tf.add_n([g[i] for g in pending]) / accumulate for i in range(len(self.order))]
                if clip > 0:
                    grads, _ = tf.clip_by_global_norm(grads, clip)
                optimizer.apply_gradients(zip(grads, [self.variables[n] for n in self.order]))
                pending = []

    def flat(self) -> np.ndarray:
        return np.concatenate([self.variables[n].numpy().reshape(-1) for n in self.order])
