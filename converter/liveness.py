"""Live activation memory of a model, computed from its graph.

Each non-constant tensor of the main subgraph lives from the operator that
writes it (or from the start, for model inputs) to the last operator that
reads it (or to the end, for model outputs). At every operator the bytes of
the tensors alive together are summed; their maximum is the least activation
memory any planner could give this operator order. Variables (the training
state) are counted apart, since they live in the arena for good.
This is a computed lower bound, not a measurement: `tflm_train.memory`
measures the arena the interpreter actually needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflm_train.converter.model_ir import Model, is_handle


@dataclass
class Liveness:
    peak_bytes: int  # largest sum of activations alive together
    peak_op: int  # operator index where it happens
    peak_tensors: list[tuple[str, int]]  # (name, bytes) alive there, largest first
    variable_bytes: int  # variables (training state), alive throughout
    peak_indices: list[int]  # the tensors alive at the peak


def tensor_bytes(model: Model, index: int) -> int:
    t = model.tensors[index]
    if is_handle(t.type):
        return 0
    return int(np.prod(model.shape(index))) * model.dtype(index).itemsize


def activation_spans(model: Model) -> dict[int, tuple[int, int]]:
    """tensor -> (first, last) operator index of its life, for every tensor
    the planner places (not constants, not variables); -1 / len(ops) for
    model inputs / outputs."""
    end = len(model.operators)
    first: dict[int, int] = {int(t): -1 for t in model.main.inputs}
    last: dict[int, int] = {int(t): end for t in model.main.outputs}
    variables = {i for i, t in enumerate(model.tensors) if t.isVariable}
    for index, op in enumerate(model.operators):
        for t in model.outputs_of(op):
            first.setdefault(t, index)
        for t in model.inputs_of(op):
            if t >= 0 and model.constant(t) is None:
                last[t] = max(last.get(t, index), index)
                first.setdefault(t, index)
    return {
        t: (first[t], last.get(t, first[t]))
        for t in first
        if t not in variables and model.constant(t) is None
    }


def bytes_per_op(model: Model, spans: dict[int, tuple[int, int]]) -> list[int]:
    """Bytes of the activations alive together at each operator."""
    totals = [0] * len(model.operators)
    for t, (start, stop) in spans.items():
        size = tensor_bytes(model, t)
        for index in range(max(start, 0), min(stop, len(totals) - 1) + 1):
            totals[index] += size
    return totals


def live_bytes(model_bytes: bytes) -> Liveness:
    model = Model.from_bytes(model_bytes)
    spans = activation_spans(model)
    totals = bytes_per_op(model, spans)
    peak = max(totals, default=0)
    peak_op = totals.index(peak) if totals else 0
    peak_set = [t for t, (start, stop) in spans.items() if start <= peak_op <= stop] if peak else []
    variables = [i for i, t in enumerate(model.tensors) if t.isVariable]
    named = sorted(((model.tensor_name(t), tensor_bytes(model, t)) for t in peak_set), key=lambda p: -p[1])
    return Liveness(
        peak_bytes=peak,
        peak_op=peak_op,
        peak_tensors=named,
        variable_bytes=sum(tensor_bytes(model, t) for t in variables),
        peak_indices=sorted(peak_set),
    )
