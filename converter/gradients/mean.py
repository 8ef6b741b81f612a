"""MEAN over constant axes: TFLMT_MEAN_GRAD spreads dy back evenly.

A MEAN over height and width of a linear layer's output made for it alone
is a global average pool: the linear layer reads the pooled gradient itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.gradients import Step, rule

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward


@rule("MEAN")
def mean(bw: Backward, step: Step) -> None:
    model = bw.model
    x, axes_tensor = model.inputs_of(step.op)[:2]
    shape = model.shape(x)
    axes = model.constant(axes_tensor)
    if axes is None:
        raise ConversionError("MEAN with computed axes has no gradient in tflm-train")
    axes = np.asarray(axes).reshape(-1)
    if not np.issubdtype(axes.dtype, np.integer) or len(shape) == 0:
        raise ConversionError("MEAN's axes must be constant integers (the model is corrupt)")
    reduced = sorted({int(a) % len(shape) for a in axes})
    if len(shape) == 4 and reduced == [1, 2] and bw.pools_a_linear_layer(step.op, x):
        bw.pooled[x] = step.dy
        return
    dx = bw.grad_tensor(x)
    bw.emit(ops.MEAN_GRAD, [step.dy, bw.mode], [dx], custom_options=ops.mean_grad_options(shape, reduced))
    bw.contribute(x, dx)
