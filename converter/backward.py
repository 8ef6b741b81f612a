"""Reverse-mode differentiation of the forward graph, written as operators.

Starting from the gradient the loss op produces, walks the forward operators
in reverse and, for each one that lies between a trainable operator and the
loss, appends the operators that compute the gradient of its inputs (and of
its trainable parameters, which the kernels add into the state). Gradients
are float32 tensors shaped like the forward tensor they belong to; where a
tensor feeds several operators, its gradient contributions are summed with
stock ADD ops. No gradient is made for a tensor nothing trainable lies
behind, so the deepest adapter computes no input gradient and frozen layers
before it get no backward ops at all.

This module is the driver; the rule of each operator type is in the table of
converter/gradients/ (one module per op family). The activation masks the
linear rules read are added before, by converter/activation_masks.py.
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter import gradients, ops
from tflm_train.converter.activation_masks import OUR_LINEAR_OPS
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.gradients import Step
from tflm_train.converter.layers import LINEAR_OPS
from tflm_train.converter.recompute import Recomputable
from tflm_train.converter.rewrite import Rewrite

# Every operator type the backward pass can go through (the rule table's keys).
SUPPORTED = gradients.supported()


class Backward:
    """Walks the forward graph backwards, applying each op type's rule."""

    def __init__(self, rw: Rewrite, mode: int, origin: dict[int, int]):
        self.rw = rw
        self.model = rw.model
        self.mode = mode
        self.origin = origin  # id(op) -> index in the original model
        self.contributions: dict[int, list[int]] = {}
        self.need_grad: set[int] = set()
        self.influenced: set[int] = set()
        # Forward tensors whose gradient is only its average per channel: a
        # linear layer feeding a global average pool / MEAN reads the pooled
        # gradient itself, so the spread-out gradient is never stored.
        self.pooled: dict[int, int] = {}
        # Tensors a forward op keeps only for its backward op, which could
        # make them again instead (converter/recompute.py decides).
        self.recomputable: list[Recomputable] = []
        self.producers: dict[int, int] = {}
        self.consumers: dict[int, list] = {}

    # ---- analysis -------------------------------------------------------------
    def _plan(self, forward: list, loss_input: int) -> None:
        trainable = {id(op) for op in self.rw.trainable_ops}
        influenced: set[int] = set()
        for op in forward:
            inputs = [t for t in self.model.inputs_of(op) if t >= 0]
            if id(op) in trainable or any(t in influenced for t in inputs):
                influenced.update(self.model.outputs_of(op))
        reaches_loss = {loss_input}
        for op in reversed(forward):
            if any(t in reaches_loss for t in self.model.outputs_of(op)):
                reaches_loss.update(t for t in self.model.inputs_of(op) if t >= 0)
        self.need_grad = influenced & reaches_loss
        self.influenced = influenced
        for op in self.rw.trainable_ops:
            if self.model.outputs_of(op)[0] not in self.need_grad:
                raise ConversionError(
                    f"the adapted layer at operator {self.origin.get(id(op), '?')} does not feed the loss"
                )

    # ---- helpers for the rules (converter/gradients/) ---------------------------
    def grad_tensor(self, forward_tensor: int) -> int:
        """A new float32 tensor for the gradient of forward_tensor."""
        name = self.model.tensor_name(forward_tensor) + "/grad"
        return self.model.add_tensor(name, self.model.shape(forward_tensor), np.float32)

    def emit(self, op_type: str, inputs, outputs, **kwargs):
        """Appends a backward operator; returns it."""
        return self.model.operators[self.model.append_op(op_type, inputs, outputs, **kwargs)]

    def rows(self, hidden: int) -> int:
        """Rows of a hidden activation [..., width]. A single row is not worth
        recomputing: the ops would need a row of memory for it anyway."""
        return int(np.prod(self.model.shape(hidden)[:-1]))

    def contribute(self, tensor: int, grad: int) -> None:
        """Adds grad to the gradient of tensor (summed once all readers are done)."""
        if tensor in self.need_grad:
            self.contributions.setdefault(tensor, []).append(grad)

    def pools_a_linear_layer(self, op, x: int) -> bool:
        """True when op averages all of x, made by a linear layer for it alone."""
        producer = self.producers.get(x)
        if producer is None or x not in self.need_grad:
            return False
        kind = self.model.op_type(self.model.operators[producer])
        return (kind in LINEAR_OPS or kind in OUR_LINEAR_OPS) and self.consumers.get(x) == [op]

    def _gradient_of(self, tensor: int) -> int:
        """The summed gradient of a tensor, once all its readers are done."""
        parts = self.contributions.pop(tensor)
        if len(parts) == 1:
            return parts[0]
        total = self.grad_tensor(tensor)
        self.emit(ops.ADD_GRADS, [self.mode] + parts, [total], custom_options=ops.version_only_options(ops.ADD_GRADS))
        return total

    # ---- driver -------------------------------------------------------------------------
    def build(self, forward: list, loss_input: int, loss_grad: int) -> None:
        self._plan(forward, loss_input)
        self.producers = {t: i for i, op in enumerate(self.model.operators) for t in self.model.outputs_of(op)}
        for op in forward:
            for t in self.model.inputs_of(op):
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)
        self.contributions[loss_input] = [loss_grad]
        for op in reversed(forward):
            outputs = self.model.outputs_of(op)
            if not outputs or (outputs[0] not in self.contributions and outputs[0] not in self.pooled):
                continue
            kind = self.model.op_type(op)
            rule = gradients.rule_for(kind)
            if rule is None:
                raise ConversionError(
                    f"operator {self.origin.get(id(op), '?')} ({kind}) lies between the adapted layers and the loss "
                    "and has no gradient in tflm-train yet"
                )
            if outputs[0] in self.pooled:
                rule(self, Step(op, kind, self.pooled.pop(outputs[0]), pooled=True))
            else:
                rule(self, Step(op, kind, self._gradient_of(outputs[0])))
