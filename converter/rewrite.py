"""State shared by the passes of one conversion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import StateLayout

if TYPE_CHECKING:  # config imports the methods, which import this module
    from tflm_train.converter.config import ConvertConfig


@dataclass
class Rewrite:
    model: Model
    config: ConvertConfig
    layout: StateLayout
    state: int  # index of the training-state tensor
    rng: np.random.Generator
    # id(operator) -> its index in the original model, for error messages.
    origin: dict[int, int] = field(default_factory=dict)
    trainable_ops: list[schema.OperatorT] = field(default_factory=list)
    # What the conversion decided, in words, for `convert` to print.
    notes: list[str] = field(default_factory=list)
    # Layers the method adapted: {"index", "name", "op", "params"} each.
    adapted: list[dict] = field(default_factory=list)
    # id(trainable operator) -> the adapted layer's short name.
    layer_names: dict[int, str] = field(default_factory=dict)

    def replace_op(self, old: schema.OperatorT, new: schema.OperatorT) -> None:
        operators = self.model.main.operators
        operators[operators.index(old)] = new
        if id(old) in self.origin:
            self.origin[id(new)] = self.origin[id(old)]

    def insert_after(self, anchor: schema.OperatorT, new: schema.OperatorT) -> None:
        operators = self.model.main.operators
        operators.insert(operators.index(anchor) + 1, new)

    def rewire(self, old_tensor: int, new_tensor: int, skip: schema.OperatorT) -> None:
        """Makes every reader of old_tensor (but `skip`) and the outputs read new_tensor."""
        for op in self.model.operators:
            if op is skip or op.inputs is None:
                continue
            op.inputs = np.asarray([new_tensor if t == old_tensor else t for t in op.inputs], dtype=np.int32)
        main = self.model.main
        main.outputs = [new_tensor if t == old_tensor else int(t) for t in main.outputs]


def kaiming_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """peft's LoRA A init: kaiming_uniform(a=sqrt(5)), bound 1/sqrt(fan_in)."""
    bound = 1.0 / np.sqrt(int(np.prod(shape[1:])))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Keras' Dense default, for new classifier heads."""
    bound = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)
