"""Class weights of binary cross-entropy (--pos-weight / --neg-weight), carried
by TFLMT_LOSS's options (version 2), with and without the L2-SP penalty that
keeps a trained head near its starting weights: gradients and updates
against TensorFlow (tf.GradientTape)."""

from __future__ import annotations

import importlib.resources
import re

import numpy as np
import pytest

from lazy_tensorflow import tf
from tflm_train.converter import ConversionError, ConvertConfig, constants, convert
from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import Header, parameters
from tflm_train.trainer import TrainableModel


def params_of(model: TrainableModel) -> np.ndarray:
    state = model.save_state()
    return parameters(state, Header.unpack(state))


def sigmoid_model() -> bytes:
    from test_converter import to_tflite

    tf.keras.utils.set_random_seed(4)
    inputs = tf.keras.Input((6,))
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    outputs = tf.keras.layers.Dense(1, activation="sigmoid")(hidden)
    return to_tflite(tf.keras.Model(inputs, outputs))


CASES = {
    # name: (pos_weight, neg_weight, L2-SP lambda)
    "weighted": (6.0, 0.5, 0.0),
    "weighted-l2sp": (3.0, 0.25, 0.8),
    "plain-l2sp": (1.0, 1.0, 0.8),
}


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(CASES))
def test_weighted_bce_head_steps_match_tensorflow(name):
    """A float head trained sample by sample (SGD) with weighted binary
    cross-entropy (+ L2-SP toward the start) ends where TensorFlow does:
    loss pos t -log p + neg (1 - t) -log(1 - p), gradients by GradientTape,
    plus lambda (w - w0)."""
    from tf_reference import ConvertedModel

    pos, neg, lam = CASES[name]
    base = sigmoid_model()
    regularizer = {"regularizer": "l2sp", "reg_lambda": lam} if lam else {}
    result = convert(base, ConvertConfig(method="head", loss="bce", pos_weight=pos, neg_weight=neg, **regularizer))
    model = TrainableModel(result.model)
    w0 = params_of(model)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(6, 6)).astype(np.float32)
    ys = np.array([1, 0, 0, 1, 0, 0], np.float32)
    lr = 0.2
    losses = [model.train_step(x, np.array([y], np.float32), lr) for x, y in zip(xs, ys)]

    reference = ConvertedModel(base, result.metadata, w0)
    anchors = [tf.constant(np.asarray(v)) for v in reference.variables]
    want_losses = []
    for x, y in zip(xs, ys):
        def loss_of():
            p = reference.output(x[None], logits=False)[0, 0]
            return -(pos * y * tf.math.log(p) + neg * (1 - y) * tf.math.log(1 - p))

        with tf.GradientTape() as tape:
            loss = loss_of()
        grads = tape.gradient(loss, reference.variables)
        want_losses.append(float(loss))
        for variable, grad, anchor in zip(reference.variables, grads, anchors):
            variable.assign_sub(lr * (grad + lam * (variable - anchor)))
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4, atol=1e-6)
    got, want = params_of(model), reference.flat()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(got - w0).max() > 1e-3  # the steps did move the head


def test_weights_change_the_options_only_when_given():
    base = _tiny_sigmoid()
    for config, version in ((ConvertConfig(method="head"), constants.OPTIONS_VERSIONS[constants.LOSS]),
                            (ConvertConfig(method="head", pos_weight=4.0), constants.LOSS_WEIGHTED_VERSION)):
        result = convert(base, config)
        model = Model.from_bytes(result.model)
        (op,) = [op for op in model.operators if model.op_type(op) == constants.LOSS]
        assert bytes(op.customOptions)[0] == version
    assert result.metadata["config"]["pos_weight"] == 4.0


def _tiny_sigmoid() -> bytes:
    """hey_jarvis when pymicro-wakeword is there (no TensorFlow needed), else the Keras model."""
    try:
        return (importlib.resources.files("pymicro_wakeword") / "models" / "hey_jarvis.tflite").read_bytes()
    except ModuleNotFoundError:  # pragma: no cover - the wakeword extra is a test dependency
        return sigmoid_model()


@pytest.mark.parametrize(
    "fields, phrase",
    [
        ({"pos_weight": -1.0}, "--pos-weight must be a finite value >= 0"),
        ({"neg_weight": float("nan")}, "--neg-weight must be a finite value >= 0"),
        ({"pos_weight": 2.0, "loss": "mse"}, "use them with --loss bce"),
    ],
)
def test_bad_class_weights_are_refused(fields, phrase):
    with pytest.raises(ConversionError, match=phrase):
        ConvertConfig(method="head", **fields)


def test_weights_on_a_softmax_model_are_refused(digits):
    with pytest.raises(ConversionError, match="but the loss is ce"):
        convert(digits.int8_model, ConvertConfig(method="bias", targets="last:1", pos_weight=3.0))


def test_weighted_version_matches_the_kernels():
    from test_constants import CONSTANTS_H

    version = re.search(r"constexpr\s+uint8_t\s+kLossWeightedVersion\s*=\s*(\d+)\s*;", CONSTANTS_H.read_text())
    assert version and int(version.group(1)) == constants.LOSS_WEIGHTED_VERSION
    assert constants.LOSS_WEIGHTED_VERSION != constants.OPTIONS_VERSIONS[constants.LOSS]


def test_kernel_refuses_weights_on_another_loss():
    """A version-2 blob naming a loss other than bce is malformed: the
    model does not prepare (one clear line), it does not run unweighted."""
    from tflm_train.converter import ops
    from tflm_train.runtime import Interpreter, InterpreterError

    result = convert(_tiny_sigmoid(), ConvertConfig(method="head", pos_weight=2.0))
    model = Model.from_bytes(result.model)
    (op,) = [op for op in model.operators if model.op_type(op) == constants.LOSS]
    op.customOptions = np.frombuffer(ops.loss_options("mse", 2.0, 1.0), np.uint8)
    with pytest.raises(InterpreterError, match="TFLMT_LOSS: malformed options"):
        Interpreter(model.sealed_bytes())


def test_cli_convert_writes_the_weights(tmp_path, capsys):
    from tflm_train.cli import main

    base = tmp_path / "hey_jarvis.tflite"
    base.write_bytes(_tiny_sigmoid())
    out = tmp_path / "weighted.tflite"
    assert main(["convert", str(base), "--method", "head", "--pos-weight", "8", "--neg-weight", "0.5",
                 "--regularizer", "l2sp", "--reg-lambda", "0.1", "-o", str(out), "--json"]) == 0
    capsys.readouterr()
    model = Model.from_bytes(out.read_bytes())
    (op,) = [op for op in model.operators if model.op_type(op) == constants.LOSS]
    assert np.frombuffer(bytes(op.customOptions)[2:], "<f4").tolist() == [8.0, 0.5]
    assert main(["convert", str(base), "--method", "head", "--loss", "mse", "--pos-weight", "8",
                 "-o", str(tmp_path / "bad.tflite")]) == 2
    assert "--loss bce" in capsys.readouterr().err
    assert not (tmp_path / "bad.tflite").exists()
