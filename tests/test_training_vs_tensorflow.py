"""Training steps through the TFLM interpreter against the same steps in TensorFlow.

The float digits model is converted, trained sample by sample in the
tflite-micro interpreter with our kernels, and the trained parameters are
compared with a TensorFlow model built from the same .tflite weights and the
same initial adapter values (tests/tf_reference.py), trained with Keras'
optimizers on the same samples in the same order. TensorFlow's parameters
come from tests/golden/training.npz (golden/make_golden.py; checked against
a fresh TensorFlow run by test_golden_vs_tensorflow.py), so these tests
need no TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import golden
from golden.training_cases import STEPS, TRAINING_CASES
from graphs import relative_error
from tflm_train.converter import convert
from tflm_train.converter.state_format import Header, parameters
from tflm_train.trainer import TrainableModel


# Training must lower the mean loss on the trained samples to at most this
# fraction of where it started (measured: lora-sgd 0.37, momentum 0.30, adam
# 0.84, accumulate-4 0.79, clip 0.986, bias 0.971, head 0.32, adapter 0.54;
# clip and bias move little in 20 small steps by design).
LOSS_RATIO_AT_MOST = {
    "lora-sgd": 0.5, "lora-momentum": 0.45, "lora-adam": 0.92, "lora-accumulate-4": 0.9,
    "lora-clip": 0.995, "bias": 0.985, "head": 0.45, "adapter": 0.7,
}


def train_like_tensorflow(digits, name: str):
    """Trains case `name` in TFLM; returns (trained, TensorFlow's, (loss before, after), header)."""
    case = TRAINING_CASES[name]
    want = golden.case("training", "train", name)
    config = dataclasses.replace(case.config)
    model = TrainableModel(convert(digits.float_model, config).model)
    initial = model.save_state()
    # TensorFlow started from these values; a converter that initializes
    # differently needs `python tests/golden/make_golden.py training`.
    np.testing.assert_array_equal(parameters(initial, Header.unpack(initial)), want["initial"])
    xs, ys = digits.user_train.x[:STEPS], digits.user_train.y[:STEPS]
    loss_before = np.mean([model.evaluate_loss(x, y) for x, y in zip(xs, ys)])
    for x, y in zip(xs, ys):
        model.train_step(x, y, case.lr)
    loss_after = np.mean([model.evaluate_loss(x, y) for x, y in zip(xs, ys)])
    assert loss_after <= LOSS_RATIO_AT_MOST[name] * loss_before, (loss_before, loss_after)
    state = model.save_state()
    trained = parameters(state, Header.unpack(state))
    # The comparison means something only if training moved the parameters.
    assert relative_error(trained, want["initial"]) > 1e-3
    return trained, want["trained"], (loss_before, loss_after), Header.unpack(state)


def test_lora_20_sgd_steps_match_tensorflow(digits):
    got, want, losses, header = train_like_tensorflow(digits, "lora-sgd")
    assert header.step == 20
    assert relative_error(got, want) < 1e-4
    loss_before, loss_after = losses
    assert loss_after <= LOSS_RATIO_AT_MOST["lora-sgd"] * loss_before


@pytest.mark.parametrize("name", ["lora-momentum", "lora-adam", "lora-accumulate-4", "lora-clip"])
def test_lora_optimizers_match_tensorflow(digits, name):
    got, want, losses, header = train_like_tensorflow(digits, name)
    assert header.step == 20 // TRAINING_CASES[name].config.optimizer.accumulate
    assert relative_error(got, want) < 1e-4
    assert losses[1] <= LOSS_RATIO_AT_MOST[name] * losses[0]


@pytest.mark.parametrize("method", ["bias", "head", "adapter"])
def test_other_methods_match_tensorflow(digits, method):
    got, want, losses, _ = train_like_tensorflow(digits, method)
    assert relative_error(got, want) < 1e-4
    assert losses[1] <= LOSS_RATIO_AT_MOST[method] * losses[0]


def test_int8_training_gains_like_float(digits):
    """int8 base: the loss falls and accuracy gains within 2 points of float."""
    from tflm_train import fitting
    from tflm_train.converter import ConvertConfig

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
