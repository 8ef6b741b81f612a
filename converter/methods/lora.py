"""LoRA: y = act(W x + b + (alpha / r) * B A x) beside a frozen FULLY_CONNECTED.

A [r, in] starts random (peft's kaiming-uniform), B [units, r] at zero, so
the converted model first predicts exactly what the original did (for int8
layers, the same bytes: the low-rank term enters the int32 accumulator).
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.layers import dense_layer, short_name
from tflm_train.converter.rewrite import Rewrite, kaiming_uniform


def apply(rw: Rewrite, targets: list[int]) -> None:
    model, r = rw.model, rw.config.r
    layers = [dense_layer(model, index) for index in targets]
    for layer in layers:
        name = short_name(layer.name)
        a = rw.layout.add(f"{name}/lora_A", "lora_A", name, kaiming_uniform(rw.rng, (r, layer.in_features)))
        b = rw.layout.add(f"{name}/lora_B", "lora_B", name, np.zeros((layer.units, r), np.float32))
        hidden = model.add_tensor(f"{layer.name}/lora_hidden", [layer.batches, r], np.float32)
        options = ops.FullyConnectedLayer(
            in_features=layer.in_features,
            units=layer.units,
            activation=layer.activation,
            lora_rank=r,
            lora_a_offset=a.offset,
            lora_b_offset=b.offset,
            lora_scale=rw.config.lora_scale,
        )
        new_op = model.make_op(
            ops.FULLY_CONNECTED,
            [layer.x, layer.weights, layer.bias, rw.state],
            [layer.y, hidden],
            custom_options=options.options(),
        )
        rw.replace_op(layer.op, new_op)
        rw.trainable_ops.append(new_op)
        rw.adapted.append({"index": layer.index, "name": name, "op": "FULLY_CONNECTED", "params": a.size + b.size})
    rw.notes.append(f"LoRA rank {r}, scale {rw.config.lora_scale:g} on {', '.join(short_name(l.name) for l in layers)}")
