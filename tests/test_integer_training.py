"""Integer training (`convert --arithmetic int8`): the kernels against a
bit-exact Python integer reference (tests/int_reference.py), the integer
gradients against TensorFlow's float gradients (tf.GradientTape) within a
stated tolerance, and training accuracy against float training with the same
data, sample order and schedule."""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import int_reference as ref
from tflm_train import fitting
from tflm_train.converter.config import ConvertConfig
from tflm_train.converter.convert import convert
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.ops import OptimizerConfig
from tflm_train.converter.state_format import (
    FLAG_INTEGER,
    HEADER_BYTES,
    Header,
    StateError,
    dequantized_parameters,
    integer_gradients,
    seal,
    integer_parameters,
)
from tflm_train.data import load_npz
from tflm_train.trainer import PlainModel, TrainableModel, quantize

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "tflm_train/examples/digits"
MOTIONS = ROOT / "tflm_train/examples/basic_motions"


@pytest.fixture(scope="module")
def digits_int8() -> tuple[bytes, bytes, dict]:
    base = (DIGITS / "model_int8.tflite").read_bytes()
    result = convert(base, ConvertConfig(targets="last:3", arithmetic="int8"))
    return base, result.model, result.metadata


def _data(model, path: Path, name: str):
    return fitting.prepare(model, load_npz(path / f"{name}.npz"), fitting.task_of(model), name)


# ---- the fixed-point helpers ------------------------------------------------------------------
def test_log2_table_and_helpers_match_their_definitions():
    header = (ROOT / "tflm_ops/reference/fixed_point.h").read_text()
    table = [int(v) for v in re.search(r"kLog2Table\[33\] = \{([^}]*)\}", header).group(1).split(",")]
    assert table == ref.LOG2_TABLE
    for x in (1, 2, 3, 1000, 65536, 123456789, 2**32 - 1):
        assert abs(ref.log2_q16(x) / 65536 - math.log2(x)) < 2**-9
    for value in (1, 65536, 3 * 65536 + 12345, 2**31 - 1):
        real = struct.unpack("<f", struct.pack("<I", ref.float_bits_from_q16(value)))[0]
        assert abs(real - value / 65536) <= value / 65536 * 2**-23
    assert ref.q24_from_float(0.02) == int(0.02 * 2**24) and ref.q24_from_float(1.0) == 2**24


# ---- conversion -------------------------------------------------------------------------------
def test_integer_conversion_keeps_int16_parameters_with_scales(digits_int8):
    _, converted, meta = digits_int8
    assert meta["arithmetic"] == "int8"
    tensors = meta["state"]["tensors"]
    assert {t["role"] for t in tensors} == {"lora_A", "lora_B"} and len(tensors) == 6
    assert all(t["dtype"] == "int16" and t["scale"] > 0 for t in tensors)
    p = meta["state"]["param_count"]
    assert meta["state"]["bytes"] == HEADER_BYTES + (2 * p + 3) // 4 * 4 + 4 * p  # int16 params + int32 accumulators
    model = TrainableModel(converted)
    state = model.save_state()
    header = Header.unpack(state)
    assert header.flags & FLAG_INTEGER
    b = [t for t in tensors if t["role"] == "lora_B"]
    q = integer_parameters(state, header)
    assert all(not q[t["offset"] : t["offset"] + int(np.prod(t["shape"]))].any() for t in b)  # B starts at zero


def test_integer_model_first_predicts_exactly_the_original(digits_int8):
    base, converted, _ = digits_int8
    original, model = PlainModel(base), TrainableModel(converted)
    x, _ = _data(model, DIGITS, "user_test")
    for sample in x[:40]:
        assert np.array_equal(model.predict(sample), original.predict(sample))


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(method="adapter"), "supports --method lora, bias or head"),
        (dict(optimizer=OptimizerConfig(kind="adam")), "integer SGD"),
        (dict(optimizer=OptimizerConfig(accumulate=4)), "integer SGD"),
        (dict(loss="mse"), "cross-entropy"),
        (dict(r=64), "rank up to 32"),
    ],
)
def test_unsupported_integer_options_are_refused(config, message):
    base = (DIGITS / "model_int8.tflite").read_bytes()
    with pytest.raises(ConversionError, match=message):
        convert(base, ConvertConfig(arithmetic="int8", **config))


def test_integer_training_through_a_conv_layer_is_refused():
    base = (MOTIONS / "model_int8.tflite").read_bytes()
    with pytest.raises(ConversionError, match="FULLY_CONNECTED"):
        convert(base, ConvertConfig(arithmetic="int8", targets="last:2"))


def test_cli_refuses_another_method_in_one_line(tmp_path):
    out = tmp_path / "out.tflite"
    result = subprocess.run(
        [sys.executable, "-m", "tflm_train.cli", "convert", str(DIGITS / "model_int8.tflite"), "-o", str(out),
         "--arithmetic", "int8", "--method", "adapter"], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "supports --method lora, bias or head" in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_cli_converts_with_integer_arithmetic(tmp_path):
    out = tmp_path / "out.tflite"
    result = subprocess.run(
        [sys.executable, "-m", "tflm_train.cli", "convert", str(DIGITS / "model_int8.tflite"), "-o", str(out),
         "--arithmetic", "int8", "--rounding", "nearest", "--json"], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert any("integer arithmetic" in note for note in json.loads(result.stdout)["notes"])
    assert TrainableModel(out.read_bytes()).info.raw["config"]["rounding"] == "nearest"


# ---- the kernels, bit for bit -----------------------------------------------------------------
@pytest.mark.parametrize("method, rounding", [("lora", "stochastic"), ("lora", "nearest"), ("bias", "stochastic")])
def test_integer_steps_are_bit_exact_with_the_reference(method, rounding):
    base = (DIGITS / "model_int8.tflite").read_bytes()
    config = ConvertConfig(method=method, targets="last:3", arithmetic="int8", rounding=rounding, seed=3)
    converted = convert(base, config).model
    model, graph = TrainableModel(converted), ref.IntegerGraph(converted)
    x, y = _data(model, DIGITS, "user_train")
    state = model.save_state()
    changed = 0
    for step in range(24):  # enough steps for B to move, so every LoRA term counts
        x_q = quantize(x[step][None], model.input_details)
        expected, loss_bits = graph.step(state, x_q, int(y[step]), 0.05)
        loss = model.train_step(x[step], int(y[step]), 0.05)
        state = model.save_state()
        header = Header.unpack(state)
        assert struct.pack("<f", loss) == struct.pack("<I", loss_bits), f"loss differs at step {step}"
        assert header.step == step + 1
        assert np.array_equal(integer_parameters(state, header), integer_parameters(expected, header)), step
        assert not integer_gradients(state, header).any()  # the update cleared the accumulators
        changed = np.count_nonzero(integer_parameters(state, header))
    assert changed > 0.75 * Header.unpack(state).param_count  # A and B (or the biases) moved


def test_large_parameters_take_the_kernels_wide_paths_bit_exactly():
    """The backward kernel rescales a product in one multiply when it fits 31
    bits and reduces it first when not (reference/fixed_point.h Rescaler;
    the LoRA-A rows hoist dh * multiplier when |dh| < 2^23). Parameters near
    the int16 limits make the products wide (|dh| ~ 2^30, |h| ~ 2^24), so
    both paths run; each must equal the element-by-element definition."""
    base = (DIGITS / "model_int8.tflite").read_bytes()
    converted = convert(base, ConvertConfig(targets="last:3", arithmetic="int8", seed=5)).model
    model, graph = TrainableModel(converted), ref.IntegerGraph(converted)
    x, y = _data(model, DIGITS, "user_train")
    state = bytearray(model.save_state())
    header = Header.unpack(bytes(state))
    rng = np.random.default_rng(0)
    p = header.param_count
    large = rng.integers(-32767, 32768, p)
    small = rng.integers(-3, 4, p)  # rows with a small dh keep the one-multiply path
    values = np.where(rng.random(p) < 0.5, large, small).astype("<i2")
    state[HEADER_BYTES : HEADER_BYTES + 2 * p] = values.tobytes()

    model.load_state(bytes(seal(state)))
    state = model.save_state()
    for step in range(6):
        x_q = quantize(x[step][None], model.input_details)
        expected, loss_bits = graph.step(state, x_q, int(y[step]), 0.001)
        loss = model.train_step(x[step], int(y[step]), 0.001)
        state = model.save_state()
        assert struct.pack("<f", loss) == struct.pack("<I", loss_bits), f"loss differs at step {step}"
        assert np.array_equal(integer_parameters(state, Header.unpack(state)), integer_parameters(expected, header))


# ---- against TensorFlow -----------------------------------------------------------------------
# TensorFlow differentiates the same layers in float (the int8 model's weights
# and biases dequantized, the state's int16 parameters times their scales),
# fed the integer forward pass: each layer's output takes the value of the
# int8 output (straight through) and its ReLU mask, so the comparison
# measures the integer backward pass alone: int16 activation gradients with
# per-tensor exponents, rounding into int32 accumulators. Per sample, the
# whole gradient's error stays below this fraction of its norm, plus a floor
# for vanishing gradients: a softmax output within 2^-15 of its one-hot
# value is one in the integer loss (Q15), its gradient zero.
GRADIENT_TOLERANCE = 0.01
GRADIENT_FLOOR = 1e-3


def _tensorflow_gradients(base: bytes, meta: dict, params: np.ndarray, values: dict, label: int) -> np.ndarray:
    """dLoss/dparameters in float for the digits MLP, every FULLY_CONNECTED
    fed the integer step's activations (`values`: int tensors by index)."""
    import tensorflow as tf

    from tflm_train.converter.layers import linear_target
    from tflm_train.converter.model_ir import Model

    model = Model.from_bytes(base)
    scale = meta["config"]["lora_alpha"] / meta["config"]["r"]
    by_layer: dict[str, dict] = {}
    variables = []
    for t in meta["state"]["tensors"]:
        span = slice(t["offset"], t["offset"] + int(np.prod(t["shape"])))
        variable = tf.Variable(params[span].reshape(t["shape"]).astype(np.float32))
        by_layer.setdefault(t["layer"], {})[t["role"]] = variable
        variables.append(variable)
    names = {a["index"]: a["name"] for a in meta["adapted"]}

    def real(tensor: int) -> np.ndarray:
        q = model.quant(tensor)
        return ((values[tensor].astype(np.float64) - int(q.zero_point[0])) * float(q.scale[0])).astype(np.float32)

    with tf.GradientTape() as tape:
        out = None
        for index, op in enumerate(model.operators):
            if model.op_type(op) != "FULLY_CONNECTED":
                continue
            t = linear_target(model, index)
            x = tf.constant(real(t.x).reshape(-1, t.in_features)) if out is None else out
            z = tf.matmul(x, t.weights_real, transpose_b=True) + t.bias_real
            own = by_layer.get(names.get(index), {})
            if "lora_A" in own:
                z += scale * tf.matmul(tf.matmul(x, own["lora_A"], transpose_b=True), own["lora_B"], transpose_b=True)
            if "bias_delta" in own:
                z += own["bias_delta"]
            if "weight_delta" in own:  # --method head: W + delta
                z += tf.matmul(x, own["weight_delta"], transpose_b=True)
            y_int = real(t.y).reshape(z.shape)
            mask = (values[t.y].reshape(z.shape) > int(model.quant(t.y).zero_point[0])) if t.activation else 1.0
            gated = z * tf.cast(mask, tf.float32)
            out = gated + tf.stop_gradient(y_int - gated)
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([label]), out)
    grads = tape.gradient(loss, variables)
    flat = np.zeros(params.size, np.float32)
    for t, g in zip(meta["state"]["tensors"], grads):
        flat[t["offset"] : t["offset"] + int(np.prod(t["shape"]))] = np.asarray(g).ravel()
    return flat


@pytest.mark.tf
@pytest.mark.parametrize("method", ["lora", "bias", "head"])
def test_integer_gradients_match_tensorflow(method):
    base = (DIGITS / "model_int8.tflite").read_bytes()
    targets = None if method == "head" else "last:3"  # head: the last layer's weights and bias
    result = convert(base, ConvertConfig(method=method, targets=targets, arithmetic="int8"))
    converted, meta = result.model, result.metadata
    model, graph = TrainableModel(converted), ref.IntegerGraph(converted)
    x, y = _data(model, DIGITS, "user_train")
    for i in range(20):  # move the parameters away from their start first
        model.train_step(x[i], int(y[i]), 0.05)
    state = model.save_state()
    header = Header.unpack(state)
    tensors = meta["state"]["tensors"]
    params = dequantized_parameters(state, header, tensors)
    errors = []
    for i in range(20, 40):
        after, _ = graph.step(state, quantize(x[i][None], model.input_details), int(y[i]), 0.0, update=False)
        accumulators = integer_gradients(after, header).astype(np.float64)
        got = np.zeros_like(accumulators)
        for t in tensors:
            span = slice(t["offset"], t["offset"] + int(np.prod(t["shape"])))
            got[span] = accumulators[span] * t["scale"] * 2.0**-8  # accumulator units: s_p * 2^-8
        want = _tensorflow_gradients(base, meta, params, graph.values, int(y[i]))
        error = np.linalg.norm(got - want)
        assert error <= GRADIENT_TOLERANCE * np.linalg.norm(want) + GRADIENT_FLOOR, (i, error, np.linalg.norm(want))
        errors.append(error / np.linalg.norm(want))
    assert np.median(errors) < 0.001, errors  # typically ~1e-4


# ---- training accuracy ------------------------------------------------------------------------
def _fit_accuracy(base: bytes, config: ConvertConfig, path: Path, epochs: int, lr: float, seed: int = 0) -> float:
    model = TrainableModel(convert(base, config).model)
    task = fitting.task_of(model)
    x, y = _data(model, path, "user_train")
    fitting.fit(model, x, y, task, epochs, lr, seed=seed)
    return fitting.evaluate(model, *_data(model, path, "user_test"), task)


@pytest.mark.parametrize(
    "path, method, targets, epochs, lr, gain",
    [(DIGITS, "lora", "last:3", 8, 0.02, 0.2), (MOTIONS, "lora", "logits", 40, 0.03, 0.2),
     (DIGITS, "bias", "last:3", 8, 0.05, 0.1)],
    ids=["digits_lora", "basic_motions_lora", "digits_bias"],
)
def test_integer_training_is_within_a_point_of_float(path, method, targets, epochs, lr, gain):
    base = (path / "model_int8.tflite").read_bytes()
    before = fitting.evaluate(PlainModel(base), *_data(PlainModel(base), path, "user_test"),
                              fitting.Task("accuracy", classes=10))
    accuracy = {
        arithmetic: _fit_accuracy(base, ConvertConfig(method=method, targets=targets, arithmetic=arithmetic), path,
                                  epochs, lr)
        for arithmetic in ("float", "int8")
    }
    assert accuracy["float"] > before + gain  # the schedule does adapt the model
    assert accuracy["int8"] >= accuracy["float"] - 0.01, accuracy


@pytest.mark.parametrize("method", ["lora", "bias"])
def test_an_integer_state_merges_into_a_plain_model(method):
    from tflm_train.converter.merge import merge

    converted = convert((DIGITS / "model_int8.tflite").read_bytes(),
                        ConvertConfig(method=method, targets="last:3", arithmetic="int8")).model
    model = TrainableModel(converted)
    task = fitting.task_of(model)
    x, y = _data(model, DIGITS, "user_train")
    fitting.fit(model, x, y, task, 4, 0.05, seed=0)
    assert fitting.evaluate(model, *_data(model, DIGITS, "user_test"), task) > 0.65  # it trained
    merged = PlainModel(merge(converted, model.save_state()))
    test = _data(model, DIGITS, "user_test")
    trained = fitting.evaluate(model, *test, task)
    assert abs(fitting.evaluate(merged, *test, fitting.Task("accuracy", classes=10)) - trained) < 0.02
    # The initial state (B = 0) merges to the base model (weights requantized per channel).
    base = PlainModel((DIGITS / "model_int8.tflite").read_bytes())
    classes = fitting.Task("accuracy", classes=10)
    assert abs(fitting.evaluate(PlainModel(merge(converted)), *test, classes) - fitting.evaluate(base, *test, classes)) < 0.02


# ---- state ------------------------------------------------------------------------------------
def test_integer_state_round_trips_and_corruption_is_refused(digits_int8):
    _, converted, _ = digits_int8
    model = TrainableModel(converted)
    x, y = _data(model, DIGITS, "user_train")
    for i in range(5):
        model.train_step(x[i], int(y[i]), 0.05)
    saved = model.save_state()
    prediction = model.predict(x[0])
    fresh = TrainableModel(converted)
    fresh.load_state(saved)
    assert np.array_equal(fresh.predict(x[0]), prediction)
    corrupt = bytearray(saved)
    corrupt[HEADER_BYTES + 3] ^= 0x40
    with pytest.raises(StateError, match="checksum"):
        fresh.load_state(bytes(corrupt))
