"""The bottleneck adapter (TFLMT_ADAPTER): input and parameter gradients."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tflm_train.converter import ops
from tflm_train.converter.gradients import Step, rule
from tflm_train.converter.recompute import Recomputable

if TYPE_CHECKING:
    from tflm_train.converter.backward import Backward


@rule(ops.ADAPTER)
def adapter(bw: Backward, step: Step) -> None:
    op = step.op
    x, state = bw.model.inputs_of(op)
    hidden = bw.model.outputs_of(op)[1]
    outputs = []
    if x in bw.need_grad:
        dx = bw.grad_tensor(x)
        outputs = [dx]
        bw.contribute(x, dx)
    adapter = ops.AdapterLayer.from_options(op.customOptions)
    grad_op = bw.emit(
        ops.ADAPTER_GRAD, [step.dy, x, hidden, state, bw.mode], outputs, custom_options=adapter.grad_options()
    )
    if bw.rows(hidden) > 1:
        bw.recomputable.append(Recomputable(op, grad_op, hidden, f"adapter after {bw.rw.layer_names[id(op)]}"))
