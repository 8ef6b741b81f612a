"""Finds the layers a conversion targets.

A spec is a comma-separated list of items, each one of:
  last:N    the last N eligible layers (in execution order)
  7         the operator with index 7 (as `tflm-train inspect` numbers them)
  dense_1   layers whose name (their output tensor's name, as Netron shows
            it) equals the item or contains it as a "/"-separated part
  re:PAT    layers whose name matches the regular expression PAT
  name#7    operator 7: the name `inspect` and the converter give a layer
            whose short name other layers share
Only eligible layers match; no match at all is an error that lists them.
"""

from __future__ import annotations

import re

from tflm_train.converter.errors import ConversionError
from tflm_train.converter.model_ir import Model


def layer_names(model: Model, op_index: int) -> list[str]:
    """Names that identify a layer: its output's, then its constants'.

    A model's last layer often has an output named after the graph
    ("StatefulPartitionedCall:0"); its weights still carry the layer name.
    """
    op = model.operators[op_index]
    tensors = model.outputs_of(op) + [t for t in model.inputs_of(op) if t >= 0 and model.constant(t) is not None]
    return [model.tensor_name(t) for t in tensors if model.tensor_name(t)]


def layer_name(model: Model, op_index: int) -> str:
    """The most telling of the layer's names, for messages."""
    names = layer_names(model, op_index)
    for name in names:
        if not name.startswith(("StatefulPartitionedCall", "Identity", "arith.constant")):
            return name
    return names[0] if names else f"op{op_index}"


def _segments(name: str) -> list[str]:
    # Converter names often join several paths with ";".
    return [part for path in name.split(";") for part in path.split("/") if part]


def _name_matches(item: str, name: str, loose: bool) -> bool:
    """Exact name or "/"-separated part; `loose` also ignores a trailing _N,
    which Keras adds to layer names when it traces a model for TFLite
    (layer "dense_2" appears as ".../dense_2_1/MatMul")."""
    if item.startswith("re:"):
        return re.search(item[3:], name) is not None
    if item == name or item in _segments(name):
        return True
    if "/" in item and any(path.startswith(item + "/") or path.endswith("/" + item) for path in name.split(";")):
        return True
    return loose and any(re.fullmatch(re.escape(item) + r"_\d+", part) for part in _segments(name))


def match_targets(model: Model, spec: str, eligible: list[int], kind: str) -> list[int]:
    """Operator indices (sorted) that `spec` selects among `eligible`."""
    if not eligible:
        raise ConversionError(f"the model has no {kind} layer to adapt")
    chosen: set[int] = set()
    for raw_item in spec.split(","):
        item = raw_item.strip()
        if not item:
            continue
        if item.startswith("last:"):
            try:
                count = int(item[5:])
            except ValueError:
                raise ConversionError(f"bad target {item!r}: last:N needs a number") from None
            if count < 1 or count > len(eligible):
                raise ConversionError(f"bad target {item!r}: the model has {len(eligible)} {kind} layers")
            chosen.update(eligible[-count:])
        elif item.isdigit() or re.fullmatch(r".+#\d+", item):
            index = int(item.rsplit("#", 1)[-1])
            if index not in eligible:
                raise ConversionError(
                    f"operator {index} is not a {kind} layer (those are: {', '.join(map(str, eligible))})"
                )
            chosen.add(index)
        else:
            for loose in (False, True):
                found = [i for i in eligible if any(_name_matches(item, n, loose) for n in layer_names(model, i))]
                if found:
                    break
            if not found:
                names = ", ".join(f"{i}:{layer_name(model, i)}" for i in eligible)
                raise ConversionError(f"no {kind} layer is named {item!r} (layers: {names})")
            chosen.update(found)
    if not chosen:
        raise ConversionError("no target layers given")
    return sorted(chosen)
