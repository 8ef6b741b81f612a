"""Finds the layers a conversion targets.

A spec is a comma-separated list of items, each one of:
  last:N    the last N eligible layers (in execution order)
  7         the operator with index 7 (as `tflm-train inspect` numbers them)
  dense_1   layers whose name (their output tensor's name, as Netron shows
            it) equals the item or contains it as a "/"-separated part
  re:PAT    layers whose name matches the regular expression PAT
Only eligible layers match; no match at all is an error that lists them.
"""

from __future__ import annotations

import re

from tflm_train.converter.config import ConversionError
from tflm_train.converter.model_ir import Model


def layer_name(model: Model, op_index: int) -> str:
    op = model.operators[op_index]
    outputs = model.outputs_of(op)
    return model.tensor_name(outputs[0]) if outputs else f"op{op_index}"


def _name_matches(item: str, name: str) -> bool:
    if item.startswith("re:"):
        return re.search(item[3:], name) is not None
    if item == name:
        return True
    # Converter names often join several paths with ";".
    for path in name.split(";"):
        parts = path.split("/")
        if item in parts or "/".join(parts).endswith("/" + item) or path.startswith(item + "/"):
            return True
    return False


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
        elif item.isdigit():
            index = int(item)
            if index not in eligible:
                raise ConversionError(
                    f"operator {index} is not a {kind} layer (those are: {', '.join(map(str, eligible))})"
                )
            chosen.add(index)
        else:
            found = [i for i in eligible if _name_matches(item, layer_name(model, i))]
            if not found:
                names = ", ".join(f"{i}:{layer_name(model, i)}" for i in eligible)
                raise ConversionError(f"no {kind} layer is named {item!r} (layers: {names})")
            chosen.update(found)
    if not chosen:
        raise ConversionError("no target layers given")
    return sorted(chosen)
