"""The digits training cases that test_training_vs_tensorflow.py runs in TFLM
and golden/make_golden.py runs in TensorFlow (no TensorFlow imported here).

Each case: the conversion, the learning rate, and the Keras optimizer that
takes the same steps (its class name in tf.keras.optimizers and arguments).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tflm_train.converter import ConvertConfig, OptimizerConfig

STEPS = 20  # samples, trained one by one in the same order


@dataclass(frozen=True)
class TrainingCase:
    config: ConvertConfig
    lr: float
    keras_optimizer: str = "SGD"
    keras_args: dict = field(default_factory=dict)


def _lora(**optimizer) -> ConvertConfig:
    return ConvertConfig(method="lora", r=3, targets="last:3", optimizer=OptimizerConfig(**optimizer))


TRAINING_CASES = {
    "lora-sgd": TrainingCase(ConvertConfig(method="lora", r=4, lora_alpha=8.0, targets="last:2"), 0.01),
    "lora-momentum": TrainingCase(_lora(kind="momentum", momentum=0.9), 0.02, "SGD", {"momentum": 0.9}),
    "lora-adam": TrainingCase(_lora(kind="adam"), 0.005, "Adam", {"epsilon": 1e-7}),
    "lora-accumulate-4": TrainingCase(_lora(kind="sgd", accumulate=4), 0.1),
    "lora-clip": TrainingCase(_lora(kind="sgd", clip_norm=0.05), 0.1),
    "bias": TrainingCase(ConvertConfig(method="bias", r=4), 0.01),
    "head": TrainingCase(ConvertConfig(method="head", r=4), 0.01),
    "adapter": TrainingCase(ConvertConfig(method="adapter", r=4), 0.01),
}
