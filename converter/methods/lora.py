"""LoRA beside a frozen FULLY_CONNECTED, CONV_2D or DEPTHWISE_CONV_2D.

y = act(W * x + b + (alpha / r) * delta), where
  FULLY_CONNECTED:   delta = B A x             A [r, in], B [out, r]
  CONV_2D:           delta = B conv_A(x)       A [r, k_h, k_w, in] (the layer's
                                               stride/padding), B [out, r] (1x1)
  DEPTHWISE_CONV_2D: delta = depthwise(x, B A) A [r, k_h * k_w], B [out, r]
A starts random (peft's kaiming-uniform), B at zero, so the converted model
first predicts exactly what the original did (for int8 layers, the same
bytes: the low-rank term enters the int32 accumulator).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.layers import linear_target
from tflm_train.converter.rewrite import Rewrite, kaiming_uniform
from tflm_train.converter.methods import register
from tflm_train.converter.methods.base import MethodSpec


def apply(rw: Rewrite, targets: list[int]) -> None:
    model, r = rw.model, rw.config.r
    layers = [linear_target(model, index) for index in targets]
    for target in layers:
        name = target.short
        a = rw.layout.add(f"{name}/lora_A", "lora_A", name, kaiming_uniform(rw.rng, target.layer.lora_a_shape(r)))
        b = rw.layout.add(f"{name}/lora_B", "lora_B", name, np.zeros((target.units, r), np.float32))
        layer = dataclasses.replace(
            target.layer, lora_rank=r, lora_a_offset=a.offset, lora_b_offset=b.offset, lora_scale=rw.config.lora_scale
        )
        outputs = [target.y]
        if layer.kind != ops.LinearKind.DEPTHWISE_CONV_2D:
            # conv_A(x) for the backward pass: [rows, r] (converter/recompute.py may
            # drop it, and the backward op then recomputes it)
            hidden_shape = list(model.shape(target.y)[:-1]) + [r]
            if layer.kind == ops.LinearKind.FULLY_CONNECTED:
                hidden_shape = [target.batches, r]
            outputs.append(model.add_tensor(f"{target.name}/lora_hidden", hidden_shape, np.float32))
        new_op = model.make_op(
            layer.forward_op, [target.x, target.weights, target.bias, rw.state], outputs, custom_options=layer.options()
        )
        rw.replace_op(target.op, new_op)
        rw.trainable_ops.append(new_op)
        rw.layer_names[id(new_op)] = name
        rw.adapted.append({"index": target.index, "name": name, "op": model.op_type(target.op), "params": a.size + b.size})
    rw.notes.append(f"LoRA rank {r}, scale {rw.config.lora_scale:g} on {', '.join(l.short for l in layers)}")


SPEC = register(
    MethodSpec(
        name="lora",
        help="low-rank update B A beside each target layer's frozen weights (peft's LoRA)",
        apply=apply,
        has_rank=True,
        merge_note="folds into the weights: W + (lora_alpha / r) B A",
        options={"r": 4, "lora_alpha": None},
    )
)
