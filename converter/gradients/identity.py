"""Ops that are the identity on real values, up to shape or type.

Gradient ops read gradients as flat float32, so the gradient of y serves as
the gradient of x unchanged: no backward op at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tflm_train.converter.gradients import Step, rule

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward

IDENTITIES = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS")


@rule(*IDENTITIES)
def identity(bw: Backward, step: Step) -> None:
    bw.contribute(bw.model.inputs_of(step.op)[0], step.dy)
