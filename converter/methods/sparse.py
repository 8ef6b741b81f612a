"""Sparse update: the biases of some layers plus the weights of a few.

The scheme of the on-device-training literature (e.g. Lin et al., "On-Device
Training Under 256KB Memory", 2022): the target layers named in
`sparse_biases` (default: all of them) train their bias, and those named in
`sparse_weights` also train all their weights, which start from the frozen
ones (dequantized). `sparse_channels` ("INDEX:C,C,...;INDEX:...") trains
only some output channels of a layer's weights instead: the frozen filter
stays in the model and the state holds one delta row per chosen channel
(tflm_ops/reference/channel_rows.h), so the parameters, their gradients and
the optimizer's buffers are sized to those channels. Target layers that train
nothing are refused. Which ones fit a memory budget, by their measured contribution, is
decided in tflm_train/sparse.py; this rewrite only applies a choice. A layer with trainable weights computes in float32, so its int8
outputs can differ from the original's by a rounding step at first.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train.converter.constants import GradFlag
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.layers import linear_target
from tflm_train.converter.matching import match_targets
from tflm_train.converter.rewrite import Rewrite
from tflm_train.converter.methods import register
from tflm_train.converter.methods.base import MethodSpec


def parse_channels(text: str) -> dict[int, list[int]]:
    """"3:0,5,7;5:1" -> {3: [0, 5, 7], 5: [1]} (operator index: output channels)."""
    out: dict[int, list[int]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        index, sep, channels = item.partition(":")
        try:
            if not sep:
                raise ValueError
            out[int(index)] = sorted({int(c) for c in channels.split(",") if c.strip()})
        except ValueError:
            raise ConversionError(f"sparse channels: {item!r} is not INDEX:CHANNEL,CHANNEL,...") from None
        if not out[int(index)]:
            raise ConversionError(f"sparse channels: {item!r} names no channel")
    return out


def format_channels(channels: dict[int, list[int]]) -> str:
    return ";".join(f"{i}:{','.join(map(str, sorted(c)))}" for i, c in sorted(channels.items()))


def _channel_rows(rw: Rewrite, target, name: str, channels: list[int]) -> tuple[int, int]:
    """State offset of the chosen channels' delta rows and the channel map tensor."""
    layer = target.layer
    if channels[0] < 0 or channels[-1] >= target.units:
        raise ConversionError(f"sparse channels: {name} has {target.units} output channels, not {channels[-1] + 1}")
    row_length = int(np.prod(layer.weight_shape())) // target.units
    rows = rw.layout.add(f"{name}/kernel_rows", "weight_rows", name, np.zeros((len(channels), row_length), np.float32))
    row_of_channel = np.full(target.units, -1, np.int32)
    row_of_channel[channels] = np.arange(len(channels), dtype=np.int32)
    return rows.offset, rw.model.add_tensor(f"{name}/channel_rows", [target.units], np.int32, data=row_of_channel)


def apply(rw: Rewrite, targets: list[int]) -> None:
    model = rw.model
    channel_layers = parse_channels(rw.config.sparse_channels)
    unknown = sorted(set(channel_layers) - set(targets))
    if unknown:
        raise ConversionError(f"sparse channels: operator {unknown[0]} is not a target layer")
    weight_layers = set()
    if rw.config.sparse_weights:
        weight_layers = set(match_targets(model, rw.config.sparse_weights, targets, "target"))
    bias_layers = set(targets)
    if rw.config.sparse_biases:
        bias_layers = set(match_targets(model, rw.config.sparse_biases, targets, "target"))
    layers = [linear_target(model, index) for index in targets]
    both = sorted(weight_layers & set(channel_layers))
    if both:
        raise ConversionError(f"sparse: operator {both[0]} trains its whole weights and some channels: choose one")
    idle = [l.short for l in layers if l.index not in weight_layers | bias_layers | set(channel_layers)]
    if idle:
        raise ConversionError(f"sparse: target layer {idle[0]} trains neither its bias nor its weights")
    for target in layers:
        name = target.short
        parts = {}
        params = 0
        channel_map = -1
        if target.index in channel_layers:
            parts["weight_offset"], channel_map = _channel_rows(rw, target, name, channel_layers[target.index])
            parts["grad_flags"] = target.layer.grad_flags | GradFlag.CHANNEL_ROWS
            params += len(channel_layers[target.index]) * int(np.prod(target.layer.weight_shape())) // target.units
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
        weights = -1 if target.index in weight_layers else target.weights
        # A frozen bias stays in the model. A layer with trainable weights
        # computes in float32, so an int8 model's int32 bias goes in dequantized.
        bias = -1 if "bias_offset" in parts else target.bias
        if bias >= 0 and "weight_offset" in parts and np.dtype(model.dtype(bias)) != np.float32:
            bias = model.add_tensor(f"{name}/bias_float", [target.units], np.float32, data=target.bias_real)
        inputs = [target.x, weights, bias, rw.state] + ([channel_map] if channel_map >= 0 else [])
        new_op = model.make_op(layer.forward_op, inputs, [target.y], custom_options=layer.options())
        rw.replace_op(target.op, new_op)
        rw.trainable_ops.append(new_op)
        rw.adapted.append(
            {"index": target.index, "name": name, "op": model.op_type(target.op), "params": params,
             "weights": target.index in weight_layers, "bias": "bias_offset" in parts,
             "channels": channel_layers.get(target.index, [])}
        )
    if not layers:
        raise ConversionError("sparse: no target layers")
    with_weights = [l.short for l in layers if l.index in weight_layers]
    with_weights += [f"{len(channel_layers[l.index])} of {l.units} channels of {l.short}"
                     for l in layers if l.index in channel_layers]
    with_bias = [l for l in layers if l.index in bias_layers]
    rw.notes.append(
        f"sparse update: biases of {len(with_bias)} layer{'s' if len(with_bias) != 1 else ''}"
        + (f", weights of {', '.join(with_weights)}" if with_weights else ", no weights")
    )


SPEC = register(
    MethodSpec(
        name="sparse",
        help="biases and full weights of chosen layers (--sparse-weights/--sparse-biases, or --budget-bytes: by contribution)",
        apply=apply,
        default_targets=lambda eligible: f"last:{max(eligible, 1)}",
        default_targets_help="all",
        merge_note="the trained weights and biases replace the frozen ones",
        options={"sparse_weights": "", "sparse_biases": "", "sparse_channels": ""},
        # Board fitting is a measured budget search over which layers train
        # their weights (tflm_train/sparse.py), not over layers and rank.
        board_fits_layers=False,
    )
)
