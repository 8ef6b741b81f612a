"""Activations the backward pass recomputes instead of keeping.

Two trainable ops make small hidden activations that their backward op
needs again:
  LoRA (FULLY_CONNECTED / CONV_2D)  h = conv_A(x), rank values per position,
                                    read for B's gradient;
  bottleneck adapter                a = act(D x + bd), bottleneck values per
                                    row, read for U's gradient and act'.
Kept, such a tensor holds rows * width floats of arena from the forward op
to the backward op, across everything that runs in between. Recomputed,
neither op stores it: the forward op uses each row as it makes it, and the
backward op makes it again, a row at a time, from x (which it reads anyway
for A's / D's gradient): width * taps * in_c multiply-adds per row, a small
part of the layer's own work.

A single row (a fully-connected layer at batch 1) is never a candidate: the
ops would need a row of memory to recompute it into anyway.

Recomputing never raises the graph's activation peak but always costs time,
so in "auto" it is chosen only where it lowers the step's peak computed from
the graph (converter/liveness.py): candidates largest first, each kept only
if the peak drops. (The measured arena follows that peak, give or take TFLM's
greedy planner, which places buffers first-fit and is not monotonic.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflm_train.converter.liveness import activation_spans, bytes_per_op, tensor_bytes
from tflm_train.converter.model_ir import Model


@dataclass
class Recomputable:
    """A tensor one forward op writes only for one backward op to read."""

    forward_op: object
    backward_op: object
    tensor: int
    layer: str  # whose it is, for the note


def choose(model: Model, candidates: list[Recomputable], mode: str) -> tuple[list[Recomputable], int, int]:
    """The candidates to recompute, and the graph's activation peak before and after."""
    spans = activation_spans(model)
    totals = bytes_per_op(model, spans)
    before = max(totals, default=0)
    if mode == "never" or not candidates:
        return [], before, before
    chosen = []
    for candidate in sorted(candidates, key=lambda c: -tensor_bytes(model, c.tensor)):
        start, stop = spans[candidate.tensor]
        size = tensor_bytes(model, candidate.tensor)
        trial = [total - size if start <= index <= stop else total for index, total in enumerate(totals)]
        if mode == "always" or max(trial) < max(totals):
            totals = trial
            chosen.append(candidate)
    return chosen, before, max(totals)


def apply(model: Model, chosen: list[Recomputable]) -> None:
    """Takes each chosen tensor out of the graph: the ops recompute it."""
    for candidate in chosen:
        forward, backward = candidate.forward_op, candidate.backward_op
        forward.outputs = np.asarray([t for t in model.outputs_of(forward) if t != candidate.tensor], np.int32)
        backward.inputs = np.asarray([-1 if t == candidate.tensor else t for t in model.inputs_of(backward)], np.int32)
    model.drop_tensors(c.tensor for c in chosen)
