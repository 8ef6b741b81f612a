"""Sparse update: the biases of some layers plus the full weights of a few.

The scheme of the on-device-training literature (e.g. Lin et al., "On-Device
Training Under 256KB Memory", 2022): the target layers named in
`sparse_biases` (default: all of them) train their bias, and those named in
`sparse_weights` also train all their weights, which start from the frozen
ones (dequantized). Target layers in neither list would train nothing and are
refused. Which ones fit a memory budget, by their measured contribution, is
decided in tflm_train/sparse.py; this rewrite only applies a choice. A layer with trainable weights computes in float32, so its int8
outputs can differ from the original's by a rounding step at first.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train.converter.errors import ConversionError
from tflm_train.converter.layers import linear_target
from tflm_train.converter.matching import match_targets
from tflm_train.converter.rewrite import Rewrite
from tflm_train.converter.methods import register
from tflm_train.converter.methods.base import MethodSpec


def apply(rw: Rewrite, targets: list[int]) -> None:
    model = rw.model
    weight_layers = set()
    if rw.config.sparse_weights:
        weight_layers = set(match_targets(model, rw.config.sparse_weights, targets, "target"))
    bias_layers = set(targets)
    if rw.config.sparse_biases:
        bias_layers = set(match_targets(model, rw.config.sparse_biases, targets, "target"))
    layers = [linear_target(model, index) for index in targets]
    idle = [l.short for l in layers if l.index not in weight_layers | bias_layers]
    if idle:
        raise ConversionError(f"sparse: target layer {idle[0]} trains neither its bias nor its weights")
    for target in layers:
        name = target.short
        parts = {}
        params = 0
        if target.index in weight_layers:
            w = rw.layout.add(f"{name}/kernel", "weight", name, target.weights_real)
            parts["weight_offset"] = w.offset
            params += w.size
        if target.index in bias_layers:
            initial = target.bias_real if target.bias_real is not None else np.zeros(target.units, np.float32)
            b = rw.layout.add(f"{name}/bias", "bias", name, initial)
            parts["bias_offset"] = b.offset
            params += b.size
        layer = dataclasses.replace(target.layer, **parts)
        weights = -1 if "weight_offset" in parts else target.weights
        # A frozen bias stays in the model. A layer with trainable weights
        # computes in float32, so an int8 model's int32 bias goes in dequantized.
        bias = -1 if "bias_offset" in parts else target.bias
        if bias >= 0 and "weight_offset" in parts and np.dtype(model.dtype(bias)) != np.float32:
            bias = model.add_tensor(f"{name}/bias_float", [target.units], np.float32, data=target.bias_real)
        new_op = model.make_op(layer.forward_op, [target.x, weights, bias, rw.state], [target.y],
                               custom_options=layer.options())
        rw.replace_op(target.op, new_op)
        rw.trainable_ops.append(new_op)
        rw.adapted.append(
            {"index": target.index, "name": name, "op": model.op_type(target.op), "params": params,
             "weights": "weight_offset" in parts, "bias": "bias_offset" in parts}
        )
    if not layers:
        raise ConversionError("sparse: no target layers")
    with_weights = [l.short for l in layers if l.index in weight_layers]
    with_bias = [l for l in layers if l.index in bias_layers]
    rw.notes.append(
        f"sparse update: biases of {len(with_bias)} layer{'s' if len(with_bias) != 1 else ''}"
        + (f", full weights of {', '.join(with_weights)}" if with_weights else ", no full weights")
    )


SPEC = register(
    MethodSpec(
        name="sparse",
        help="biases and full weights of chosen layers (--sparse-weights/--sparse-biases, or --budget-bytes: by contribution)",
        apply=apply,
        default_targets=lambda eligible: f"last:{max(eligible, 1)}",
        default_targets_help="all",
        merge_note="the trained weights and biases replace the frozen ones",
        options={"sparse_weights": "", "sparse_biases": ""},
        # Board fitting is a measured budget search over which layers train
        # their weights (tflm_train/sparse.py), not over layers and rank.
        board_fits_layers=False,
    )
)
