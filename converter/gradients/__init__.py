"""The backward rule of every operator type, in one table.

Each module here covers one family of forward operators and registers a rule
for each type it handles with @rule("TYPE", ...). A rule receives the
Backward driver (converter/backward.py) and a Step: the forward operator, its
type and the gradient of its first output. It appends the operators that
compute the gradient of the op's inputs (bw.contribute) and of any
trainable parameters (which the kernels add into the state). An operator
type without a rule is refused by the driver, naming the operator.

Adding a backward rule: a function in the module of its family (or a new
module here: every module in this package is imported below), its C++
kernel, and a test against TensorFlow.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward


@dataclass
class Step:
    """One forward operator the backward pass reaches."""

    op: object  # schema.OperatorT
    kind: str  # its operator type ("SOFTMAX", "TFLMT_FULLY_CONNECTED", ...)
    dy: int  # gradient tensor of its first output
    # dy is the per-channel mean of the gradient (a global average pool or
    # MEAN of this op's output read it): only linear rules see this.
    pooled: bool = False


Rule = Callable[["Backward", Step], None]
RULES: dict[str, Rule] = {}



def rule(*op_types: str) -> Callable[[Rule], Rule]:
    """Registers the decorated function as the backward rule of op_types."""

    def register(function: Rule) -> Rule:
        for op_type in op_types:
            if op_type in RULES:
                raise ValueError(f"two backward rules for {op_type}")
            RULES[op_type] = function
        return function

    return register


def rule_for(op_type: str) -> Rule | None:
    return RULES.get(op_type)


def supported() -> frozenset[str]:
    """Every operator type the backward pass goes through."""
    return frozenset(RULES)


# One module per op family: linear, adapter, activation, softmax, pooling,
# mean, crop (pad, concatenation), elementwise, identity.
for _family in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_family}")

__all__ = ["RULES", "Rule", "Step", "rule", "rule_for", "supported"]
