"""Fine-tuning and evaluation loops over a dataset, through the interpreter.

Every number here is measured by running the model in the TFLM interpreter:
the loss each training step reports, and the metric before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tflm_train.data import Dataset, check_inputs, check_labels, check_targets
from tflm_train.trainer import PlainModel, TrainableModel


@dataclass
class Task:
    """What the model's output means, for targets and the metric."""

    metric: str  # "accuracy" or "mse"
    classes: int = 0
    threshold: float | None = None  # binary outputs: decision threshold


def task_of(model: PlainModel) -> Task:
    if isinstance(model, TrainableModel):
        info = model.info
        if info.loss == "mse":
            return Task("mse")
        if info.loss == "bce":
            return Task("accuracy", classes=2, threshold=0.5 if info.raw["output_kind"] == "probabilities" else 0.0)
        return Task("accuracy", classes=info.classes)
    return Task("accuracy", classes=int(model.output_shape[-1]) if model.output_shape else 1)


def plain_task(model: PlainModel, labels: np.ndarray) -> Task:
    """Task for a model without tflm-train metadata, guessed from the labels."""
    if np.issubdtype(np.asarray(labels).dtype, np.integer):
        classes = int(model.output_shape[-1]) if model.output_shape else 1
        return Task("accuracy", classes=max(classes, 2), threshold=0.5 if classes == 1 else None)
    return Task("mse")


def prepare(model: PlainModel, data: Dataset, task: Task, path: str) -> tuple[np.ndarray, np.ndarray]:
    x = check_inputs(data, model.sample_shape, path)
    if task.metric == "mse":
        y = check_targets(data, model.output_shape, path)
    elif task.threshold is not None and isinstance(model, TrainableModel):
        y = check_targets(data, model.output_shape, path)  # binary targets
    else:
        y = check_labels(data, task.classes, path)
    return x, y


def evaluate(model: PlainModel, x: np.ndarray, y: np.ndarray, task: Task) -> float:
    """Accuracy (fraction) or mean squared error over the samples."""
    predictions = np.stack([model.predict(sample) for sample in x])
    if task.metric == "mse":
        return float(np.mean((predictions.reshape(y.shape) - y) ** 2))
    if task.threshold is not None:
        decided = (predictions.reshape(len(x), -1) > task.threshold).astype(np.int32)
        return float(np.mean(decided == np.asarray(y).reshape(len(x), -1).astype(np.int32)))
    return float(np.mean(np.argmax(predictions.reshape(len(x), -1), axis=1) == y))


@dataclass
class FitResult:
    losses: list[float] = field(default_factory=list)  # one per training step
    epoch_losses: list[float] = field(default_factory=list)  # mean per epoch
    metric: str = "accuracy"
    metric_before: float = 0.0
    metric_after: float = 0.0
    # Held-out data sets by name: (metric before, metric after).
    held_out: dict[str, tuple[float, float]] = field(default_factory=dict)
    replay_steps: int = 0  # training steps on replayed original-task samples

    @property
    def steps(self) -> int:
        return len(self.losses)


def fit(
    model: TrainableModel,
    x: np.ndarray,
    y: np.ndarray,
    task: Task,
    epochs: int,
    learning_rate: float,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    held_out: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    replay=None,
    targets: np.ndarray | None = None,
) -> FitResult:
    """Trains one sample per step, in a shuffled order per epoch.

    replay: a tflm_train.continual.ReplayBuffer of original-task samples;
    after every k-th new sample one replayed sample trains too (its loss is
    not in `losses`, which follow the new data).
    targets: what each training step gets instead of y[i] (a distillation
    model's rows, tflm_train/distill.py); y stays the metric's labels."""
    result = FitResult(metric=task.metric)
    result.metric_before = evaluate(model, x, y, task)
    held_out = held_out or {}
    before = {name: evaluate(model, *data, task) for name, data in held_out.items()}
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        epoch = []
        for i in rng.permutation(len(x)):
            loss = model.train_step(x[i], (y if targets is None else targets)[i], learning_rate)
            epoch.append(loss)
            result.losses.append(loss)
            if on_step is not None:
                on_step(len(result.losses), loss)
            if replay is not None and replay.replay_due():
                from tflm_train.continual import replayed_sample

                model.train_step(*replayed_sample(model, replay, replay.pick()), learning_rate)
                result.replay_steps += 1
        # A skipped sample (non-finite values) reports a NaN loss: the mean is
        # over the samples that trained (NaN only if none did).
        trained = [loss for loss in epoch if np.isfinite(loss)]
        result.epoch_losses.append(float(np.mean(trained)) if trained else float("nan"))
    result.metric_after = evaluate(model, x, y, task)
    result.held_out = {name: (before[name], evaluate(model, *data, task)) for name, data in held_out.items()}
    return result
