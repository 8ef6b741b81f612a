"""Sparse update: the biases of many layers plus the full weights of a few.

The scheme of the on-device-training literature (e.g. Lin et al., "On-Device
Training Under 256KB Memory", 2022): every target layer's bias trains, and
the layers named in `sparse_weights` also train all their weights, which
start from the frozen ones (dequantized). Which few fit a memory budget is
decided by measuring (tflm_train/sparse.py); this rewrite only applies a
choice. A layer with trainable weights computes in float32, so its int8
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
    layers = [linear_target(model, index) for index in targets]
    for target in layers:
        name = target.short
        parts = {}
        if target.index in weight_layers:
            w = rw.layout.add(f"{name}/kernel", "weight", name, target.weights_real)
            parts["weight_offset"] = w.offset
        initial = target.bias_real if target.bias_real is not None else np.zeros(target.units, np.float32)
        b = rw.layout.add(f"{name}/bias", "bias", name, initial)
        layer = dataclasses.replace(target.layer, bias_offset=b.offset, **parts)
        weights = -1 if "weight_offset" in parts else target.weights
        new_op = model.make_op(layer.forward_op, [target.x, weights, -1, rw.state], [target.y], custom_options=layer.options())
        rw.replace_op(target.op, new_op)
        rw.trainable_ops.append(new_op)
        params = b.size + (target.weights_real.size if "weight_offset" in parts else 0)
        rw.adapted.append(
            {"index": target.index, "name": name, "op": model.op_type(target.op), "params": params,
             "weights": "weight_offset" in parts}
        )
    if not layers:
        raise ConversionError("sparse: no target layers")
    chosen = [l.short for l in layers if l.index in weight_layers]
    rw.notes.append(
        f"sparse update: biases of {len(layers)} layers"
        + (f", full weights of {', '.join(chosen)}" if chosen else ", no full weights")
    )


SPEC = register(
    MethodSpec(
        name="sparse",
        help="biases of all target layers plus the full weights of a few (--sparse-weights or --budget-bytes)",
        apply=apply,
        default_targets=lambda eligible: f"last:{max(eligible, 1)}",
        default_targets_help="all",
        merge_note="the trained weights and biases replace the frozen ones",
        options={"sparse_weights": ""},
        # Board fitting is a measured budget search over which layers train
        # their weights (tflm_train/sparse.py), not over layers and rank.
        board_fits_layers=False,
    )
)
