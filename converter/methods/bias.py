"""Bias-only fine-tuning (BitFit): only the target layers' biases train.

The trainable bias starts at the frozen one (dequantized for int8 layers,
whose int32 accumulator then gets exactly the original bias back).
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.layers import dense_layer, short_name
from tflm_train.converter.rewrite import Rewrite


def apply(rw: Rewrite, targets: list[int]) -> None:
    model = rw.model
    layers = [dense_layer(model, index) for index in targets]
    for layer in layers:
        name = short_name(layer.name)
        initial = layer.bias_real if layer.bias_real is not None else np.zeros(layer.units, np.float32)
        bias = rw.layout.add(f"{name}/bias", "bias", name, initial)
        options = ops.FullyConnectedLayer(
            in_features=layer.in_features,
            units=layer.units,
            activation=layer.activation,
            bias_offset=bias.offset,
        )
        new_op = model.make_op(
            ops.FULLY_CONNECTED,
            [layer.x, layer.weights, -1, rw.state],
            [layer.y],
            custom_options=options.options(),
        )
        rw.replace_op(layer.op, new_op)
        rw.trainable_ops.append(new_op)
        rw.adapted.append({"index": layer.index, "name": name, "op": "FULLY_CONNECTED", "params": bias.size})
    rw.notes.append(f"bias-only on {', '.join(short_name(l.name) for l in layers)}")
