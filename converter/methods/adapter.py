"""Bottleneck adapters (Houlsby): y' = y + U relu(D y + bd) + bu after a layer.

Works per row of the layer's output channels, so after a convolution it is a
1x1 bottleneck adapter between blocks. D starts random, U and bu at zero, so
a fresh adapter is the identity. The bottleneck width is the conversion's rank.
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.layers import linear_target
from tflm_train.converter.rewrite import Rewrite, kaiming_uniform
from tflm_train.converter.methods import register
from tflm_train.converter.methods.base import MethodSpec


def apply(rw: Rewrite, targets: list[int]) -> None:
    model, width = rw.model, rw.config.r
    layers = [linear_target(model, index) for index in targets]
    for layer in layers:
        name = layer.short
        y = layer.y
        features = layer.units
        rows = int(np.prod(model.shape(y))) // features
        if rows * features != int(np.prod(model.shape(y))):
            raise ConversionError(f"operator {layer.index}: output is not rows of {features}")
        down = rw.layout.add(f"{name}/adapter_down", "adapter_down", name, kaiming_uniform(rw.rng, (width, features)))
        down_bias = rw.layout.add(f"{name}/adapter_down_bias", "adapter_down_bias", name, np.zeros(width, np.float32))
        up = rw.layout.add(f"{name}/adapter_up", "adapter_up", name, np.zeros((features, width), np.float32))
        up_bias = rw.layout.add(f"{name}/adapter_up_bias", "adapter_up_bias", name, np.zeros(features, np.float32))
        adapted = model.add_tensor(f"{layer.name}/adapted", model.shape(y), model.dtype(y), quant=model.quant(y))
        hidden = model.add_tensor(f"{layer.name}/adapter_hidden", [rows, width], np.float32)
        options = ops.AdapterLayer(
            features=features,
            bottleneck=width,
            down_offset=down.offset,
            down_bias_offset=down_bias.offset,
            up_offset=up.offset,
            up_bias_offset=up_bias.offset,
        )
        new_op = model.make_op(ops.ADAPTER, [y, rw.state], [adapted, hidden], custom_options=options.options())
        rw.insert_after(layer.op, new_op)
        rw.rewire(y, adapted, skip=new_op)
        rw.trainable_ops.append(new_op)
        rw.layer_names[id(new_op)] = name
        params = down.size + down_bias.size + up.size + up_bias.size
        rw.adapted.append({"index": layer.index, "name": name, "op": model.op_type(layer.op), "params": params})
    rw.notes.append(f"bottleneck adapters of width {width} after {', '.join(l.short for l in layers)}")


SPEC = register(
    MethodSpec(
        name="adapter",
        help="bottleneck adapter after each target layer (Houlsby); width = --rank",
        apply=apply,
        has_rank=True,
        merges=False,
        merge_note=(
            "bottleneck adapters are nonlinear and cannot be folded into the base weights; "
            "deploy the converted model with the state instead"
        ),
        options={"r": 4},
    )
)
