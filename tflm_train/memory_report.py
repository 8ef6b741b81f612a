"""`tflm-train report`: will training fit, and where does the memory go?

Arena sizes are measured (the smallest arena the TFLM interpreter allocates
in, tflm_train/memory.py): for training, the converted model; for inference,
the same model with nothing trainable, rebuilt from it (merge with the
initial state, adapters dropped), which is the base model as deployed. The
breakdown of the training arena names what the graph keeps at the step's
peak (converter/liveness.py) and calls the measured rest "everything else".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tflm_train.boards import Board
from tflm_train.converter.merge import merge
from tflm_train.converter.model_ir import Model, ModelError
from tflm_train.converter.training_info import training_info
from tflm_train.inspection import describe
from tflm_train.converter.liveness import live_bytes, tensor_bytes
from tflm_train.memory import smallest_arena


@dataclass
class Report:
    arena_bytes_inference: int
    arena_bytes_training: int
    flash_bytes: int
    trainable_params: int
    base_params: int
    optimizer_state_bytes: int
    breakdown: dict[str, int] = field(default_factory=dict)
    live_peak_bytes: int = 0
    # What the trainable parameters take in the state: 4 B each in float,
    # 2 B (int16) or 1 B (int8) under --arithmetic int8.
    trainable_param_bytes: int | None = None

    def to_json(self) -> dict:
        return {
            "arena_bytes_inference": self.arena_bytes_inference,
            "arena_bytes_training": self.arena_bytes_training,
            "flash_bytes": self.flash_bytes,
            "trainable_params": self.trainable_params,
            "trainable_param_bytes": (4 * self.trainable_params if self.trainable_param_bytes is None
                                      else self.trainable_param_bytes),
            "base_params": self.base_params,
            "optimizer_state_bytes": self.optimizer_state_bytes,
            "base_to_trainable": self.base_params / max(self.trainable_params, 1),
            "live_peak_bytes": self.live_peak_bytes,
            "breakdown": self.breakdown,
        }


def _kept_for_backward(model: Model, peak_indices: list[int], backward_start: int) -> int:
    """Bytes of forward activations alive at the peak that backward ops read."""
    forward_outputs, backward_inputs = set(), set()
    for index, op in enumerate(model.operators):
        target = forward_outputs if index < backward_start else backward_inputs
        tensors = model.outputs_of(op) if index < backward_start else model.inputs_of(op)
        target.update(t for t in tensors if t >= 0)
    return sum(tensor_bytes(model, t) for t in peak_indices if t in forward_outputs and t in backward_inputs)


_BYTES_PER_VALUE = {"float32": 4, "int16": 2, "int8": 1}


def parameter_bytes(state_tensors: list[dict]) -> int:
    """Bytes of the trainable parameters, from the state layout's entries
    (an integer state's entries name their dtype; float entries do not)."""
    return sum(int(np.prod(t["shape"])) * _BYTES_PER_VALUE[t.get("dtype", "float32")] for t in state_tensors)


def report(model_bytes: bytes) -> Report:
    model = Model.from_bytes(model_bytes)
    info = training_info(model)
    if info is None:
        raise ModelError("report needs a model converted by tflm-train (run: tflm-train convert)")
    base = merge(model_bytes, drop_adapters=True)
    training = smallest_arena(model_bytes)
    params = info.param_count
    slots = info.raw["state"]["optimizer_slots"]
    liveness = live_bytes(model_bytes)
    backward_start = info.raw["forward_ops"][1]  # the loss op, then backward ops
    # Activation gradients alive at the peak: float32 "/grad" tensors, or the
    # int16 "/grad_int" ones of integer training.
    gradients_in_flight = sum(
        tensor_bytes(model, t) for t in liveness.peak_indices
        if (model.tensor_name(t).endswith("/grad") and model.dtype(t) == np.float32)
        or (model.tensor_name(t).endswith("/grad_int") and model.dtype(t) == np.int16)
    )
    # Per parameter: a float32 or int32 gradient (accumulator) and 4-byte
    # optimizer slots either way; the parameter itself as its dtype.
    param_bytes = parameter_bytes(info.raw["state"]["tensors"])
    breakdown = {
        "activations kept for backward": _kept_for_backward(model, liveness.peak_indices, backward_start),
        "gradients": 4 * params + gradients_in_flight,
        "optimizer state": 4 * params * slots,
        "adapter parameters": param_bytes,
    }
    breakdown["everything else"] = max(training - sum(breakdown.values()), 0)
    return Report(
        arena_bytes_inference=smallest_arena(base),
        arena_bytes_training=training,
        flash_bytes=len(model_bytes),
        trainable_params=params,
        base_params=describe(base)["params"],
        optimizer_state_bytes=4 * params * slots,
        breakdown=breakdown,
        live_peak_bytes=liveness.peak_bytes,
        trainable_param_bytes=param_bytes,
    )


def fits(result: Report, board: Board) -> list[str]:
    """Why the converted model cannot train on `board` (empty: it fits)."""
    problems = []
    if result.arena_bytes_training > board.sram_bytes:
        problems.append(
            f"training needs a {result.arena_bytes_training:,}-byte arena, {board.name} has "
            f"{board.sram_bytes:,} bytes of SRAM"
        )
    if result.flash_bytes > board.flash_bytes:
        problems.append(f"the model is {result.flash_bytes:,} bytes, {board.name} has {board.flash_bytes:,} of flash")
    return problems


def plot_breakdown(result: Report, path: str, title: str) -> None:
    """Writes breakdown_png(...) to path."""
    from tflm_train.converter.model_ir import write_atomic

    write_atomic(path, breakdown_png(result, title))


def breakdown_png(result: Report, title: str) -> bytes:
    """PNG: the training arena's parts beside the inference arena."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.6))
    left = 0
    colors = ["#3182bd", "#e6550d", "#31a354", "#756bb1", "#bdbdbd"]
    for (name, size), color in zip(result.breakdown.items(), colors):
        axis.barh(["training"], [size], left=left, color=color, label=f"{name} ({size:,} B)")
        left += size
    axis.barh(["inference"], [result.arena_bytes_inference], color="#969696")
    axis.set_xlabel("tensor arena bytes (measured in the TFLM interpreter)")
    axis.set_title(title)
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncols=3, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
