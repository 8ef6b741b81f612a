"""Bias-only fine-tuning (BitFit): only the target layers' biases train.

Works on FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D. The trainable bias
starts at the frozen one (dequantized for int8 layers, whose int32
accumulator then gets exactly the original bias back).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train.converter.layers import linear_target
from tflm_train.converter.rewrite import Rewrite
from tflm_train.converter.methods import register
from tflm_train.converter.methods.base import MethodSpec


def apply(rw: Rewrite, targets: list[int]) -> None:
    model = rw.model
    layers = [linear_target(model, index) for index in targets]
    for target in layers:
        name = target.short
        initial = target.bias_real if target.bias_real is not None else np.zeros(target.units, np.float32)
        bias = rw.layout.add(f"{name}/bias", "bias", name, initial)
        layer = dataclasses.replace(target.layer, bias_offset=bias.offset)
        new_op = model.make_op(
            layer.forward_op, [target.x, target.weights, -1, rw.state], [target.y], custom_options=layer.options()
        )
        rw.replace_op(target.op, new_op)
        rw.trainable_ops.append(new_op)
        rw.adapted.append({"index": target.index, "name": name, "op": model.op_type(target.op), "params": bias.size})
    rw.notes.append(f"bias-only on {', '.join(l.short for l in layers)}")


SPEC = register(
    MethodSpec(
        name="bias",
        help="only the target layers' biases train (BitFit)",
        apply=apply,
        merge_note="the trained biases replace the frozen ones",
    )
)
