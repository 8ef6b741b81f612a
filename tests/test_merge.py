"""`merge`: a trained state folded into a plain .tflite that predicts the same."""

from __future__ import annotations

import numpy as np
import pytest

from lazy_tensorflow import tf  # only the tests marked tf touch it
from tflm_train.converter import ConversionError, ConvertConfig, convert, methods
from tflm_train.converter.merge import merge
from tflm_train.converter.state_format import StateError
from tflm_train.runtime import custom_ops_of
from tflm_train.trainer import PlainModel, TrainableModel


def trained_state(model_bytes: bytes, digits, steps: int = 64) -> bytes:
    model = TrainableModel(model_bytes)
    for i in range(steps):
        model.train_step(digits.user_train.x[i], digits.user_train.y[i], 0.02)
    return model, model.save_state()


@pytest.mark.parametrize("method", [m.name for m in methods.specs() if m.merges])
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_merged_model_predicts_like_the_trained_one(digits, method, kind):
    base = digits.float_model if kind == "float" else digits.int8_model
    converted = convert(base, ConvertConfig(method=method, targets="last:3")).model
    trained, state = trained_state(converted, digits)
    merged = merge(converted, state)
    assert custom_ops_of(merged) == []
    plain = PlainModel(merged)
    xs = digits.user_test.x[:100]
    want = np.stack([trained.predict(x) for x in xs])
    got = np.stack([plain.predict(x) for x in xs])
    if kind == "int8" and method == "lora":
        # W + scale B A requantized per channel: nearly the same predictions.
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.97
        assert np.max(np.abs(got - want)) < 0.1
    else:
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(merged) < len(converted)


@pytest.mark.tf
def test_merged_model_runs_in_tensorflow_lite_too(digits):
    converted = convert(digits.float_model, ConvertConfig(method="lora")).model
    trained, state = trained_state(converted, digits)
    merged = merge(converted, state)
    interpreter = tf.lite.Interpreter(model_content=merged)
    interpreter.allocate_tensors()
    index_in = interpreter.get_input_details()[0]["index"]
    index_out = interpreter.get_output_details()[0]["index"]
    for x in digits.user_test.x[:20]:
        interpreter.set_tensor(index_in, x[None].astype(np.float32))
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(index_out)[0], trained.predict(x), atol=1e-5)


def test_adapters_cannot_be_merged(digits):
    converted = convert(digits.int8_model, ConvertConfig(method="adapter")).model
    _, state = trained_state(converted, digits, steps=2)
    with pytest.raises(ConversionError, match="cannot be folded"):
        merge(converted, state)


def test_merge_refuses_state_of_another_model(digits):
    converted = convert(digits.int8_model, ConvertConfig()).model
    other = convert(digits.float_model, ConvertConfig()).model
    _, state = trained_state(other, digits, steps=2)
    with pytest.raises(StateError, match="another base model"):
        merge(converted, state)
