"""Integer SGD with momentum (`convert --arithmetic int8 --optimizer momentum`):
Keras' rule (v = m v - lr g; p += v) with an int32 velocity per parameter in
2^-16 parameter steps and the momentum in Q16 (tflm_ops/reference/lora_int.h
SgdMomentumIntUpdate). The kernel against the bit-exact Python twin
(tests/int_reference.py), that twin against TensorFlow's SGD with momentum on
the same real values, and training accuracy against float SGD + momentum."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import int_reference as ref
from tflm_train import fitting
from tflm_train.converter import integer
from tflm_train.converter.config import ConvertConfig
from tflm_train.converter.constants import SGD_INT_MOMENTUM_VERSION
from tflm_train.converter.convert import convert
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.ops import OptimizerConfig
from tflm_train.converter.state_format import (
    HEADER_BYTES,
    Header,
    integer_gradients,
    integer_parameters,
    integer_velocities,
)
from tflm_train.data import load_npz
from tflm_train.trainer import PlainModel, TrainableModel, quantize

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "tflm_train/examples/digits"


def _config(**kw) -> ConvertConfig:
    momentum = kw.pop("momentum", 0.9)
    return ConvertConfig(targets="last:3", arithmetic="int8",
                         optimizer=OptimizerConfig(kind="momentum", momentum=momentum), **kw)


def _data(model, name: str):
    return fitting.prepare(model, load_npz(DIGITS / f"{name}.npz"), fitting.task_of(model), name)


def test_constants_match_the_kernel():
    header = (ROOT / "tflm_ops/kernels/constants.h").read_text()
    assert int(re.search(r"kSgdIntMomentumVersion = (\d+);", header).group(1)) == SGD_INT_MOMENTUM_VERSION
    math = (ROOT / "tflm_ops/reference/lora_int.h").read_text()
    assert int(re.search(r"kMomentumBits = (\d+);", math).group(1)) == integer.MOMENTUM_BITS
    assert int(re.search(r"kVelocityFractionBits = (\d+);", math).group(1)) == 16


def test_momentum_state_holds_a_velocity_per_parameter():
    result = convert((DIGITS / "model_int8.tflite").read_bytes(), _config(momentum=0.8))
    state = result.metadata["state"]
    p = state["param_count"]
    assert state["optimizer_slots"] == 1
    assert state["bytes"] == HEADER_BYTES + (2 * p + 3) // 4 * 4 + 4 * p + 4 * p  # params, accumulators, velocities
    assert any("momentum 0.8" in note for note in result.metadata["notes"])
    plain = convert((DIGITS / "model_int8.tflite").read_bytes(), ConvertConfig(targets="last:3", arithmetic="int8"))
    assert plain.metadata["state"]["bytes"] == state["bytes"] - 4 * p
    assert plain.metadata["state"]["layout_hash"] != state["layout_hash"]  # one state never loads into the other
    assert integer.momentum_q16(0.8) == round(0.8 * 65536) and integer.momentum_q16(0.99999999) == 65535


@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_momentum_steps_are_bit_exact_with_the_reference(rounding):
    converted = convert((DIGITS / "model_int8.tflite").read_bytes(), _config(rounding=rounding, seed=2)).model
    model, graph = TrainableModel(converted), ref.IntegerGraph(converted)
    x, y = _data(model, "user_train")
    state = model.save_state()
    for step in range(20):
        expected, loss_bits = graph.step(state, quantize(x[step][None], model.input_details), int(y[step]), 0.002)
        loss = model.train_step(x[step], int(y[step]), 0.002)
        state = model.save_state()
        header = Header.unpack(state)
        assert struct.pack("<f", loss) == struct.pack("<I", loss_bits), f"loss differs at step {step}"
        assert np.array_equal(integer_parameters(state, header), integer_parameters(expected, header)), step
        assert np.array_equal(integer_velocities(state, header), integer_velocities(expected, header)), step
        assert not integer_gradients(state, header).any()
    velocities = integer_velocities(state, header)
    assert np.count_nonzero(velocities) > 0.75 * header.param_count
    # A velocity remembers more than the last step: it is not just -lr g.
    assert np.abs(velocities).max() > 2**16  # over a whole parameter step


@pytest.mark.tf
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_the_integer_rule_follows_tensorflow_sgd_with_momentum(rounding):
    """The quantized rule (int_reference.sgd_momentum, which the kernel equals
    bit for bit) against tf.keras.optimizers.SGD(momentum) on the real
    values: parameter = q * s, gradient = accumulator * 2^-8 * s (quantization-
    aware scaling), the same learning rate and momentum (their fixed-point
    values). TensorFlow's velocity is its parameter's change per step (w += v)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    count, steps, scale = 2000, 25, 0.01
    lr_q24, momentum = ref.q24_from_float(0.01), integer.momentum_q16(0.9)
    q0 = rng.integers(-2000, 2000, count)
    params, velocities = [int(v) for v in q0], [0] * count
    weights = tf.Variable(q0.astype(np.float64) * scale)
    optimizer = tf.keras.optimizers.SGD(learning_rate=lr_q24 / 2**24, momentum=momentum / 2**16)
    for step in range(1, steps + 1):
        grads = rng.integers(-(2**18), 2**18, count)
        before = weights.numpy().copy()
        optimizer.apply_gradients([(tf.constant(grads * 2.0**-8 * scale), weights)])
        tf_velocity = (weights.numpy() - before) / scale  # parameter steps
        previous = list(params)
        ref.sgd_momentum(params, [int(g) for g in grads], velocities, lr_q24, momentum, rounding == "stochastic", 7,
                         step)
        velocity = np.asarray(velocities) / 2**16
        # The velocity is rounded to 2^-16 steps once per update (errors decay with m).
        assert np.abs(velocity - tf_velocity).max() <= 2**-16 * step
        change = np.asarray(params) - np.asarray(previous)
        assert np.abs(change - velocity).max() <= (1.0 if rounding == "stochastic" else 0.5)
    drift = np.asarray(params) - weights.numpy() / scale  # parameter steps, after 25 updates
    if rounding == "stochastic":
        assert abs(drift.mean()) < 0.1  # unbiased: the roundings cancel on average
        assert drift.std() < 0.5 * np.sqrt(steps)
    else:
        assert np.abs(drift).max() <= 0.5 * steps


def test_integer_momentum_training_is_within_a_point_of_float():
    base = (DIGITS / "model_int8.tflite").read_bytes()
    plain = PlainModel(base)
    before = fitting.evaluate(plain, *_data(plain, "user_test"), fitting.Task("accuracy", classes=10))
    accuracy = {}
    for arithmetic in ("float", "int8"):
        config = ConvertConfig(targets="last:3", arithmetic=arithmetic,
                               optimizer=OptimizerConfig(kind="momentum", momentum=0.9))
        model = TrainableModel(convert(base, config).model)
        task = fitting.task_of(model)
        fitting.fit(model, *_data(model, "user_train"), task, 8, 0.002, seed=0)
        accuracy[arithmetic] = fitting.evaluate(model, *_data(model, "user_test"), task)
    assert accuracy["float"] > before + 0.2  # the schedule does adapt the model
    assert accuracy["int8"] >= accuracy["float"] - 0.01, accuracy


def test_a_momentum_of_one_or_more_is_refused():
    with pytest.raises(ConversionError, match=r"--momentum in \[0, 1\)"):
        convert((DIGITS / "model_int8.tflite").read_bytes(), _config(momentum=1.0))


def test_cli_converts_and_refuses_momentum_in_one_line(tmp_path):
    out = tmp_path / "out.tflite"
    common = [sys.executable, "-m", "tflm_train.cli", "convert", str(DIGITS / "model_int8.tflite"), "-o", str(out),
              "--arithmetic", "int8", "--optimizer", "momentum"]
    done = subprocess.run(common + ["--momentum", "0.8"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    meta = TrainableModel(out.read_bytes()).info.raw
    assert meta["config"]["optimizer"]["kind"] == "momentum" and meta["state"]["optimizer_slots"] == 1
    out.unlink()
    done = subprocess.run(common + ["--momentum", "1.2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--momentum in [0, 1)" in lines[0], done.stderr
    assert not out.exists()
