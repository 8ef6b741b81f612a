"""The training state: persistence, export/restore, rollback, refusal of bad state."""

from __future__ import annotations

import numpy as np
import pytest

from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.converter.state_format import HEADER_BYTES, Header, StateError, checksum
from tflm_train.runtime import InterpreterError
from tflm_train.trainer import TrainableModel


@pytest.fixture(scope="module")
def converted(digits) -> bytes:
    return convert(digits.int8_model, ConvertConfig(method="lora", targets="last:2")).model


def trained(model_bytes: bytes, data, steps: int = 30, lr: float = 0.02) -> TrainableModel:
    model = TrainableModel(model_bytes)
    for i in range(steps):
        model.train_step(data.x[i % len(data.x)], data.y[i % len(data.y)], lr)
    return model


def test_parameters_persist_between_invocations(converted, digits):
    model = TrainableModel(converted)
    first = model.save_state()
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.05)
    after_one = model.save_state()
    assert Header.unpack(after_one).step == 1
    assert after_one != first
    model.train_step(digits.user_train.x[1], digits.user_train.y[1], 0.05)
    assert Header.unpack(model.save_state()).step == 2


def test_inference_mode_changes_nothing(converted, digits):
    model = trained(converted, digits.user_train, steps=5)
    state = model.save_state()
    for x in digits.user_test.x[:10]:
        model.predict(x)
        model.evaluate_loss(x, 3)
    assert model.save_state() == state


def test_state_restores_into_a_fresh_interpreter(converted, digits):
    model = trained(converted, digits.user_train)
    blob = model.save_state()
    header = Header.unpack(blob)
    assert header.step == 30 and header.crc == checksum(blob)
    rebooted = TrainableModel(converted)  # a device reboot: new interpreter, same model
    rebooted.load_state(blob)
    for x in digits.user_test.x[:20]:
        np.testing.assert_array_equal(rebooted.predict(x), model.predict(x))
    # Training continues from where it stopped, identically on both.
    for m in (model, rebooted):
        m.train_step(digits.user_train.x[5], digits.user_train.y[5], 0.02)
    assert rebooted.save_state() == model.save_state()


def test_reset_rolls_back_to_the_initial_adapter(converted, digits):
    fresh = TrainableModel(converted)
    initial_predictions = [fresh.predict(x) for x in digits.user_test.x[:10]]
    model = trained(converted, digits.user_train)
    model.reset()
    assert Header.unpack(model.save_state()).step == 0
    for x, want in zip(digits.user_test.x[:10], initial_predictions):
        np.testing.assert_array_equal(model.predict(x), want)
    assert Header.unpack(model.save_state()).step == 0


def test_corrupt_state_is_refused_in_python_and_in_the_kernel(converted, digits):
    model = trained(converted, digits.user_train)
    blob = bytearray(model.save_state())
    blob[HEADER_BYTES + 17] ^= 0x40  # one flipped bit in a parameter
    fresh = TrainableModel(converted)
    with pytest.raises(StateError, match="checksum"):
        fresh.load_state(bytes(blob))
    # Written straight into the tensor (as firmware would), the kernel refuses it.
    fresh.interpreter.set_input(fresh.info.input_index("state"), np.frombuffer(bytes(blob), np.uint8))
    with pytest.raises(InterpreterError, match="TFLMT_STATE: state is corrupt"):
        fresh.predict(digits.user_test.x[0])
    # Reset recovers the initial adapter.
    fresh.reset()
    fresh.predict(digits.user_test.x[0])


def test_truncated_state_is_refused(converted, digits):
    blob = trained(converted, digits.user_train, steps=2).save_state()
    with pytest.raises(StateError, match="truncated"):
        TrainableModel(converted).load_state(blob[:-8])
    with pytest.raises(StateError, match="truncated"):
        TrainableModel(converted).load_state(blob[:20])


def test_state_of_another_model_is_refused(digits, converted):
    other = convert(digits.float_model, ConvertConfig(method="lora", targets="last:2")).model
    blob = trained(other, digits.user_train, steps=2).save_state()
    model = TrainableModel(converted)
    with pytest.raises(StateError, match="another base model"):
        model.load_state(blob)
    model.interpreter.set_input(model.info.input_index("state"), np.frombuffer(blob, np.uint8))
    with pytest.raises(InterpreterError, match="saved for another base model"):
        model.predict(digits.user_test.x[0])


def test_state_of_another_conversion_is_refused(digits, converted):
    other = convert(digits.int8_model, ConvertConfig(method="lora", r=8, targets="last:2")).model
    blob = trained(other, digits.user_train, steps=2).save_state()
    with pytest.raises(StateError, match="another conversion"):
        TrainableModel(converted).load_state(blob)


def test_state_trained_with_another_lora_scale_is_refused(digits, converted):
    other = convert(digits.int8_model, ConvertConfig(method="lora", lora_alpha=8.0, targets="last:2")).model
    blob = trained(other, digits.user_train, steps=2).save_state()
    with pytest.raises(StateError, match="another conversion"):
        TrainableModel(converted).load_state(blob)


def test_same_conversion_twice_accepts_each_others_state(digits, converted):
    again = convert(digits.int8_model, ConvertConfig(method="lora", targets="last:2", seed=99)).model
    source = trained(again, digits.user_train, steps=3)
    blob = source.save_state()
    model = TrainableModel(converted)
    model.load_state(blob)  # same base, same layout
    assert model.save_state() == blob
    for x in digits.user_test.x[:5]:
        np.testing.assert_array_equal(model.predict(x), source.predict(x))


def test_gradient_accumulation_updates_every_n_samples(digits):
    model_bytes = convert(digits.int8_model, ConvertConfig(optimizer=OptimizerConfig(accumulate=4))).model
    model = TrainableModel(model_bytes)
    steps = []
    for i in range(10):
        model.train_step(digits.user_train.x[i], digits.user_train.y[i], 0.02)
        header = model.state_header()
        steps.append((header.step, header.accumulated))
    assert steps[:5] == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert steps[-1] == (2, 2)
    # Pending gradients survive an export / restore.
    rebooted = TrainableModel(model_bytes)
    rebooted.load_state(model.save_state())
    assert rebooted.state_header().accumulated == 2


def test_non_finite_gradient_is_dropped_not_applied(digits):
    """A bad sample (here: values that overflow float32) cannot poison the adapter."""
    model = TrainableModel(convert(digits.float_model, ConvertConfig()).model)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    good = model.save_state()
    bad_sample = np.full(64, 1e30, np.float32)
    model.train_step(bad_sample, 1, 0.02)
    header = model.state_header()
    assert header.skipped == 1 and header.step == 1
    after = model.save_state()
    assert after[HEADER_BYTES:] == good[HEADER_BYTES:]
    prediction = model.predict(digits.user_test.x[0])
    assert np.all(np.isfinite(prediction))
