"""FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D, stock (frozen) or ours.

A frozen stock layer gets only an input gradient; our trainable layers (LoRA,
bias, sparse, head) also add their parameter gradients into the state. One
backward op does both: TFLMT_<KIND>_GRAD, with the forward op's options.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tflm_train.converter import ops
from tflm_train.converter.activation_masks import OUR_LINEAR_OPS, mask_of
from tflm_train.converter.constants import GradFlag
from tflm_train.converter.gradients import Step, rule
from tflm_train.converter.layers import LINEAR_OPS, linear_target
from tflm_train.converter.recompute import Recomputable

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward


@rule(*LINEAR_OPS, *sorted(OUR_LINEAR_OPS))
def linear(bw: Backward, step: Step) -> None:
    model, op = bw.model, step.op
    inputs = model.inputs_of(op)
    outputs = model.outputs_of(op)
    x, y = inputs[0], outputs[0]
    channel_map = -1
    if step.kind in LINEAR_OPS:  # a frozen stock layer: input gradient only
        layer = linear_target(model, model.operators.index(op)).layer
        weights, state, hidden = inputs[1], -1, -1
    else:
        layer = ops.LinearLayer.from_options(op.customOptions)
        # Delta rows of some channels (sparse) train on top of the frozen filter.
        channel_map = inputs[4] if layer.grad_flags & GradFlag.CHANNEL_ROWS else -1
        weights = inputs[1] if layer.weight_offset < 0 or channel_map >= 0 else -1
        state = inputs[3]
        mask = mask_of(model, op)  # converter/activation_masks.py
        kept = outputs[:-1] if mask >= 0 else outputs
        hidden = kept[1] if len(kept) > 1 else -1
        if mask >= 0:
            y = mask  # the backward op reads the mask in place of y
    trainable = layer.weight_offset >= 0 or layer.bias_offset >= 0 or layer.lora_rank > 0
    dx_outputs = []
    if x in bw.need_grad:
        dx = bw.grad_tensor(x)
        dx_outputs = [dx]
        bw.contribute(x, dx)
    if not dx_outputs and not trainable:
        return
    y_input = y if layer.activation != ops.Activation.NONE else -1
    if step.pooled:
        layer = dataclasses.replace(layer, grad_flags=layer.grad_flags | GradFlag.DY_POOLED)
    # x only where weights or LoRA train: a layer's input is not kept alive
    # for a backward pass that does not read it.
    x_input = x if layer.weight_offset >= 0 or layer.lora_rank > 0 else -1
    grad_op = bw.emit(
        layer.grad_op,
        [step.dy, x_input, y_input, weights, state if trainable else -1, bw.mode, hidden]
        + ([channel_map] if channel_map >= 0 else []),
        dx_outputs,
        custom_options=layer.grad_options(),
    )
    if hidden >= 0 and bw.rows(hidden) > 1:
        bw.recomputable.append(Recomputable(op, grad_op, hidden, f"LoRA of {bw.rw.layer_names[id(op)]}"))
