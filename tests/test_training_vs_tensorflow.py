"""Training steps through the TFLM interpreter against the same steps in TensorFlow.

The float digits model is converted, trained sample by sample in the
tflite-micro interpreter with our kernels, and the trained parameters are
compared with a TensorFlow model built from the same .tflite weights and the
same initial adapter values, trained with Keras' optimizers on the same
samples in the same order.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from graphs import relative_error
from reference import ReferenceModel
from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.converter.state_format import Header, parameters
from tflm_train.trainer import TrainableModel


def train_both(base: bytes, data, config: ConvertConfig, tf_optimizer, steps: int, lr: float):
    result = convert(base, config)
    model = TrainableModel(result.model)
    initial = model.save_state()
    reference = ReferenceModel(base, result.metadata, initial)
    xs, ys = data.x[:steps], data.y[:steps]
    loss_before = np.mean([model.evaluate_loss(x, y) for x, y in zip(xs, ys)])
    for x, y in zip(xs, ys):
        model.train_step(x, y, lr)
    losses = (loss_before, np.mean([model.evaluate_loss(x, y) for x, y in zip(xs, ys)]))
    reference.train(xs, ys, tf_optimizer, accumulate=config.optimizer.accumulate, clip=config.optimizer.clip_norm)
    state = model.save_state()
    trained = parameters(state, Header.unpack(state))
    # The comparison means something only if training moved the parameters.
    assert relative_error(trained, parameters(initial, Header.unpack(initial))) > 1e-3
    return trained, reference.flat(), losses, Header.unpack(state)


def test_lora_20_sgd_steps_match_tensorflow(digits):
    lr = 0.01
    config = ConvertConfig(method="lora", r=4, lora_alpha=8.0, targets="last:2")
    got, want, losses, header = train_both(digits.float_model, digits.user_train, config, tf.keras.optimizers.SGD(lr), 20, lr)
    assert header.step == 20
    assert relative_error(got, want) < 1e-4
    loss_before, loss_after = losses
    assert loss_after < loss_before


@pytest.mark.parametrize(
    "name,optimizer,keras_optimizer,lr",
    [
        ("momentum", OptimizerConfig(kind="momentum", momentum=0.9), lambda lr: tf.keras.optimizers.SGD(lr, momentum=0.9), 0.02),
        ("adam", OptimizerConfig(kind="adam"), lambda lr: tf.keras.optimizers.Adam(lr, epsilon=1e-7), 0.005),
        ("accumulate-4", OptimizerConfig(kind="sgd", accumulate=4), lambda lr: tf.keras.optimizers.SGD(lr), 0.1),
        ("clip", OptimizerConfig(kind="sgd", clip_norm=0.05), lambda lr: tf.keras.optimizers.SGD(lr), 0.1),
    ],
)
def test_lora_optimizers_match_tensorflow(digits, name, optimizer, keras_optimizer, lr):
    config = ConvertConfig(method="lora", r=3, targets="last:3", optimizer=optimizer)
    got, want, _, header = train_both(digits.float_model, digits.user_train, config, keras_optimizer(lr), 20, lr)
    assert header.step == 20 // optimizer.accumulate
    assert relative_error(got, want) < 1e-4


@pytest.mark.parametrize("method", ["bias", "head", "adapter"])
def test_other_methods_match_tensorflow(digits, method):
    lr = 0.01
    config = ConvertConfig(method=method, r=4)
    got, want, losses, _ = train_both(digits.float_model, digits.user_train, config, tf.keras.optimizers.SGD(lr), 20, lr)
    assert relative_error(got, want) < 1e-4
    assert losses[1] < losses[0]


def test_int8_training_gains_like_float(digits):
    """int8 base: the loss falls and accuracy gains within 2 points of float."""
    from tflm_train import fitting

    gains, losses = {}, {}
    for kind, base in (("float", digits.float_model), ("int8", digits.int8_model)):
        model = TrainableModel(convert(base, ConvertConfig(method="lora", targets="last:2")).model)
        task = fitting.task_of(model)
        x, y = fitting.prepare(model, digits.user_train, task, "train")
        x_test, y_test = fitting.prepare(model, digits.user_test, task, "test")
        before = fitting.evaluate(model, x_test, y_test, task)
        result = fitting.fit(model, x, y, task, epochs=8, learning_rate=0.02, seed=0)
        gains[kind] = fitting.evaluate(model, x_test, y_test, task) - before
        losses[kind] = result.epoch_losses
    assert losses["int8"][-1] < 0.6 * losses["int8"][0]
    assert gains["float"] > 0.05
    assert abs(gains["int8"] - gains["float"]) <= 0.02, gains
