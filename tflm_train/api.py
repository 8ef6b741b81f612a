"""The Python API: what the CLI does, as functions (exported by `tflm_train`).

    import tflm_train as tt
    result = tt.convert("model.tflite", tt.ConvertConfig(method="lora", r=4))
    model = tt.TrainableModel(result.model)
    history = tt.fit(model, x_train, y_train, epochs=5, learning_rate=0.02)
    accuracy = tt.evaluate(model, x_test, y_test)
    plain = tt.merge(result.model, model.save_state())

Every number is measured in the TFLM interpreter, as with the CLI. Errors the
user can fix raise a subclass of tflm_train.TflmTrainError with a one-line
message. Nothing here writes files: the results are bytes and objects.
"""

from __future__ import annotations

import os
from typing import Callable, Union

import numpy as np

from tflm_train import fitting as _fitting
from tflm_train.converter import ConvertConfig, ConvertResult, OptimizerConfig
from tflm_train.converter.config import LossName, MethodName, OptimizerName
from tflm_train.converter.merge import merge as _merge
from tflm_train.errors import TflmTrainError, UserError
from tflm_train.data import DataError, Dataset
from tflm_train.fitting import FitResult
from tflm_train.planning import ConvertPlan, plan_convert
from tflm_train.memory_report import Report
from tflm_train.memory_report import report as _report
from tflm_train.trainer import PlainModel, TrainableModel

ModelSource = Union[bytes, str, os.PathLike]


def _model_bytes(model: ModelSource) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    try:
        with open(model, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"cannot read {model}: {exc.strerror or exc}") from None


def convert(
    model: ModelSource,
    config: ConvertConfig | None = None,
    *,
    board: str | None = None,
    budget_bytes: int | None = None,
    on_try: Callable[[str], None] | None = None,
    data: tuple | None = None,
) -> ConvertResult:
    """Rewrites a .tflite (bytes or path) so that it trains itself.

    config: method, rank, targets, loss, optimizer, ... (default: LoRA rank 4
    on the last two layers). board: pick layers and rank (sparse: the layers
    whose weights train) so that the measured training arena fits that
    board's SRAM; budget_bytes: the same for sparse, with a byte budget;
    data: (x, y) representative samples that rank sparse's parts by measured
    contribution (tflm_train/sparse.py).
    Returns the converted model's bytes (.model) and its metadata (.metadata).
    """
    return plan(model, config, board=board, budget_bytes=budget_bytes, on_try=on_try, data=data).result


def plan(
    model: ModelSource,
    config: ConvertConfig | None = None,
    *,
    board: str | None = None,
    budget_bytes: int | None = None,
    on_try: Callable[[str], None] | None = None,
    data: tuple | None = None,
) -> ConvertPlan:
    """convert(), plus how the conversion was chosen (board fit, budget)."""
    representative = None if data is None else (np.asarray(data[0]), np.asarray(data[1]))
    return plan_convert(_model_bytes(model), config or ConvertConfig(), board=board, budget_bytes=budget_bytes,
                        on_try=on_try, data=representative)


def _task(model: PlainModel, y: np.ndarray) -> _fitting.Task:
    """What y means for this model: class labels or float targets.

    A converted model knows it from its loss (and its classes from its
    output); a plain model is judged by y: integer labels give accuracy over
    the model's output classes, floats give mean squared error."""
    if isinstance(model, TrainableModel):
        return _fitting.task_of(model)
    return _fitting.plain_task(model, y)


def _prepared(model: PlainModel, x, y) -> tuple[_fitting.Task, np.ndarray, np.ndarray]:
    data = Dataset(np.asarray(x), np.asarray(y))
    if len(data.x) != len(data.y):
        raise DataError(f"data: x has {len(data.x)} samples but y has {len(data.y)}")
    if len(data.x) == 0:
        raise DataError("data: no samples")
    task = _task(model, data.y)
    xs, ys = _fitting.prepare(model, data, task, "data")
    return task, xs, ys


def fit(
    model: TrainableModel,
    x,
    y,
    *,
    epochs: int = 5,
    learning_rate: float = 0.01,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    distill_weight: float | None = None,
) -> FitResult:
    """Fine-tunes a converted model, one sample per step, in the interpreter.

    x: samples shaped (N, *input shape); y: class labels (N,) or float
    targets, whichever the model's loss takes (checked). Returns the loss of
    every step and the metric (accuracy or mse) on x before and after.
    distill_weight: a model converted with distill=T learns without
    forgetting: its outputs on x are recorded first, and each step pulls
    toward them with this weight (tflm_train/distill.py).
    """
    if not isinstance(model, TrainableModel):
        raise UserError("fit needs a converted model (TrainableModel); convert it first")
    if epochs < 1:
        raise UserError("epochs must be at least 1")
    if not learning_rate >= 0:
        raise UserError("learning_rate must be >= 0")
    task, xs, ys = _prepared(model, x, y)
    targets = None
    if distill_weight is not None:
        from tflm_train import distill

        if not distill.is_distill_model(model):
            raise UserError("distill_weight needs a model converted with distill=T")
        if not 0 <= distill_weight < float("inf"):
            raise UserError("distill_weight must be a finite value >= 0")
        targets = distill.soft_targets(ys, distill.record_teacher(model, xs), distill_weight)
    return _fitting.fit(model, xs, ys, task, epochs, learning_rate, seed, on_step=on_step, targets=targets)


def evaluate(model: PlainModel, x, y) -> float:
    """Accuracy (a fraction) or mean squared error of any model on (x, y)."""
    task, xs, ys = _prepared(model, x, y)
    return _fitting.evaluate(model, xs, ys, task)


def merge(converted: ModelSource, state: bytes | TrainableModel | None = None) -> bytes:
    """A plain .tflite (builtin ops only) computing what the converted model
    computes with `state` (bytes, or a TrainableModel's current state; None:
    the initial state). Refused for methods that cannot fold (adapter)."""
    if isinstance(state, TrainableModel):
        state = state.save_state()
    return _merge(_model_bytes(converted), state)


def report(model: ModelSource) -> Report:
    """Training and inference memory of a converted model, measured in TFLM."""
    return _report(_model_bytes(model))


__all__ = [
    "ConvertConfig",
    "ConvertPlan",
    "ConvertResult",
    "FitResult",
    "LossName",
    "MethodName",
    "OptimizerConfig",
    "OptimizerName",
    "PlainModel",
    "Report",
    "TflmTrainError",
    "TrainableModel",
    "convert",
    "evaluate",
    "fit",
    "merge",
    "plan",
    "report",
]
