"""Distillation targets on the host: what tflm_ops/device/distill.{h,cc} does on a device.

A model converted with `convert --distill T` trains on target rows
[label, weight, teacher probabilities]. The teacher is the model itself with
the adapter it starts from (the factory adapter, or the committed one before
an episode): `record_teacher` runs one inference per sample in the TFLM
interpreter and keeps the output distribution; `soft_targets` packs the rows.
The loss kernel softens the recorded probabilities by T itself.
"""

from __future__ import annotations

import numpy as np

from tflm_train.trainer import TrainableModel

TARGET_HEADER = 2  # label, weight (tflm_ops/reference/distill.h)


def is_distill_model(model) -> bool:
    return isinstance(model, TrainableModel) and model.distill_temperature is not None


def teacher_from_output(output: np.ndarray, output_is_logits: bool) -> np.ndarray:
    """device/distill.cc TeacherFromOutput: probabilities clamped at 0 and
    renormalized (a quantized softmax rarely sums to exactly 1), or a softmax
    of logits."""
    out = np.asarray(output, np.float32).reshape(-1)
    if output_is_logits:
        e = np.exp(out - out.max())
    else:
        e = np.maximum(out, 0.0)
    return (e / e.sum()).astype(np.float32)


def record_teacher(model: TrainableModel, x: np.ndarray) -> np.ndarray:
    """The model's output distribution on every sample with its current
    adapter, [samples, classes] (one inference each; nothing trains): the
    softmax of its `teacher_logits` output (not of its quantized output,
    whose small probabilities round to 0). A sample holding a NaN or an
    infinity gets zeros: it is skipped, not trained on."""
    from tflm_train.trainer import all_finite

    teacher = np.zeros((len(x), model.info.classes), np.float32)
    for i, sample in enumerate(x):
        if all_finite(np.asarray(sample)):
            teacher[i] = teacher_from_output(model.teacher_logits(sample), True)
    return teacher


def soft_targets(labels: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """Rows [label, weight, teacher...] (device/distill.h PackDistillTarget)."""
    labels = np.asarray(labels).reshape(-1)
    rows = np.zeros((len(labels), TARGET_HEADER + teacher.shape[1]), np.float32)
    rows[:, 0] = labels
    rows[:, 1] = weight
    rows[:, TARGET_HEADER:] = teacher
    return rows
