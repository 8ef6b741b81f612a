"""Distillation from the base model (`convert --distill T`): learning without forgetting.

The loss becomes TFLMT_DISTILL_LOSS (tflm_ops/kernels/distill_loss.cc): softmax
cross-entropy on the label plus lambda T^2 KL(teacher_T || student_T), where the
teacher is the model's own output distribution with the committed adapter,
recorded before training: one inference per sample reads the logits the loss
reads, which the converted model outputs as `teacher_logits` (just before
`loss` and `state`); on a device tflmt::Trainer::RecordTeacher
(tflm_ops/device/distill.h). Its target input is float32
[rows, classes + 2], one row per sample: label, weight lambda, the teacher's
probabilities. The weight travels with the sample, so `fit --distill-weight`
(or the firmware) chooses it without a new conversion, and a row with weight
0 is plain cross-entropy (held-out checks, replayed samples if wanted).
"""

from __future__ import annotations

import struct

import numpy as np

from tflm_train.converter.constants import DISTILL_LOSS, OPTIONS_VERSIONS
from tflm_train.converter.errors import ConversionError

# Values in front of the teacher's probabilities in a target row (reference/distill.h).
TARGET_HEADER = 2
# The temperatures the kernel accepts (TFLMT_DISTILL_LOSS Init).
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 1000.0


def check_temperature(temperature: float) -> None:
    if not (MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):
        raise ConversionError(f"--distill takes a temperature in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]")


def options(temperature: float) -> bytes:
    return struct.pack("<Bf", OPTIONS_VERSIONS[DISTILL_LOSS], temperature)


def add_target(model, rows: int, classes: int) -> int:
    """The float32 [rows, classes + 2] target input."""
    return model.add_tensor("tflm_train/target", [rows, classes + TARGET_HEADER], np.float32)


def check_loss(loss: str) -> None:
    if loss != "ce":
        raise ConversionError(f"--distill needs the cross-entropy loss (ce), not {loss}")
