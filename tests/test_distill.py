"""Distillation from the base model (`convert --distill T`, learning without forgetting).

The loss kernel (TFLMT_DISTILL_LOSS) against tf.GradientTape on the same
logits and target rows; the converted model's interface and its first step
against the plain model; the host's teacher recorder against the device
helper (tflm_ops/device/distill.cc compiled for the host); `fit
--distill-weight` end to end. tests/test_device_build.py builds
device/distill.cc and the kernel for Cortex-M4.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from graphs import Graph, relative_error
from lazy_tensorflow import tf
from test_cli import MODEL, TRAIN, run_json
from tflm_train import distill
from tflm_train.converter import ConversionError, ConvertConfig, convert, ops
from tflm_train.converter.distill import options as distill_options
from tflm_train.converter.model_ir import Quant
from tflm_train.trainer import TrainableModel

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
TRAIN_MODE = np.array([ops.Mode.TRAIN], np.int32)
EVALUATE_MODE = np.array([ops.Mode.EVALUATE], np.int32)


def loss_graph(logits_shape, temperature: float, quant: Quant | None = None):
    classes = logits_shape[-1]
    rows = int(np.prod(logits_shape)) // classes
    g = Graph()
    dtype = np.float32 if quant is None else np.int8
    tz = g.input("logits", logits_shape, dtype, quant=quant)
    tt, tmode = g.input("target", [rows, classes + 2]), g.input("mode", [1], np.int32)
    tloss, tgrad = g.output(g.tensor("loss", [1])), g.output(g.tensor("grad", logits_shape))
    g.op(ops.DISTILL_LOSS, [tz, tt, tmode], [tloss, tgrad], distill_options(temperature))
    return g, tz, tt, tmode, tloss, tgrad


def tensorflow_loss(logits: np.ndarray, rows: np.ndarray, temperature: float):
    """loss = mean_b( CE(z, y) + w T^2 KL(q_T || softmax(z / T)) ), q_T = p^(1/T) normalized,
    and its gradient by tf.GradientTape."""
    z = tf.Variable(logits.astype(np.float64))
    labels = rows[:, 0].astype(np.int32)
    weight = tf.constant(rows[:, 1].astype(np.float64))
    p = rows[:, 2:].astype(np.float64)
    with np.errstate(divide="ignore"):
        log_p = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)) / temperature, -np.inf)
    q = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    q = q / q.sum(axis=1, keepdims=True)
    log_q = np.where(q > 0, np.log(np.where(q > 0, q, 1.0)), 0.0)
    with tf.GradientTape() as tape:
        hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, z)
        log_s_t = tf.nn.log_softmax(z / temperature, axis=1)
        kl = tf.reduce_sum(q * (log_q - log_s_t), axis=1)
        loss = tf.reduce_mean(hard + weight * temperature**2 * kl)
    return float(loss.numpy()), tape.gradient(loss, z).numpy()


def random_rows(rng, rows: int, classes: int, weights) -> np.ndarray:
    teacher = rng.dirichlet(np.full(classes, 0.5), size=rows)
    teacher[:, -1] = 0.0  # a probability the int8 softmax rounded to zero
    teacher /= teacher.sum(axis=1, keepdims=True)
    out = distill.soft_targets(rng.integers(0, classes, rows), teacher.astype(np.float32), 0.0)
    out[:, 1] = weights
    return out


@pytest.mark.tf
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("weights", [[0.0], [0.5], [2.0, 0.0, 1.0]])
def test_loss_and_gradient_match_tensorflow(temperature, weights):
    rng = np.random.default_rng(int(temperature * 10) + len(weights))
    rows = random_rows(rng, len(weights), 10, weights)
    logits = rng.normal(0, 3, (len(weights), 10)).astype(np.float32)
    g, tz, tt, tmode, tloss, tgrad = loss_graph(logits.shape, temperature)
    out = g.run({tz: logits, tt: rows, tmode: TRAIN_MODE})
    want_loss, want_grad = tensorflow_loss(logits, rows, temperature)
    assert relative_error(out[tloss], want_loss) < TOLERANCE
    assert relative_error(out[tgrad], want_grad) < TOLERANCE
    if not any(weights):  # weight 0 is plain cross-entropy: TFLMT_LOSS's answer
        g2 = Graph()
        z2, t2, m2 = g2.input("logits", logits.shape), g2.input("labels", [len(weights)], np.int32), g2.input(
            "mode", [1], np.int32)
        l2, d2 = g2.output(g2.tensor("loss", [1])), g2.output(g2.tensor("grad", logits.shape))
        g2.op(ops.LOSS, [z2, t2, m2], [l2, d2], ops.loss_options("ce"))
        plain = g2.run({z2: logits, t2: rows[:, 0].astype(np.int32), m2: TRAIN_MODE})
        assert relative_error(out[tgrad], plain[d2]) < 1e-6


@pytest.mark.tf
def test_loss_on_int8_logits_matches_tensorflow_on_dequantized_values():
    rng = np.random.default_rng(3)
    quant = Quant.of(0.125, -3)
    q = rng.integers(-128, 128, (1, 10)).astype(np.int8)
    rows = random_rows(rng, 1, 10, [1.0])
    g, tz, tt, tmode, tloss, tgrad = loss_graph(q.shape, 2.0, quant)
    out = g.run({tz: q, tt: rows, tmode: TRAIN_MODE})
    want_loss, want_grad = tensorflow_loss((q.astype(np.float32) + 3) * 0.125, rows, 2.0)
    assert relative_error(out[tloss], want_loss) < TOLERANCE
    assert relative_error(out[tgrad], want_grad) < TOLERANCE


def test_bad_target_rows_are_skipped_in_training_and_refused_in_evaluation():
    from tflm_train.runtime import InterpreterError

    g, tz, tt, tmode, tloss, tgrad = loss_graph((1, 4), 2.0)
    good = np.array([[1, 0.5, 0.25, 0.25, 0.25, 0.25]], np.float32)
    assert np.isfinite(g.run({tz: np.zeros((1, 4)), tt: good, tmode: TRAIN_MODE})[tloss]).all()
    for bad in ([[4, 0.5, 0.25, 0.25, 0.25, 0.25]], [[1.5, 0, 0, 0, 0, 0]], [[1, -1, 0.25, 0.25, 0.25, 0.25]],
                [[1, 0.5, 0, 0, 0, 0]], [[1, 0.5, np.nan, 0.25, 0.25, 0.25]], [[1, np.inf, 0.25, 0.25, 0.25, 0.25]]):
        bad = np.array(bad, np.float32)
        assert np.isnan(g.run({tz: np.zeros((1, 4)), tt: bad, tmode: TRAIN_MODE})[tloss]).all()
        with pytest.raises(InterpreterError, match="TFLMT_DISTILL_LOSS: target row 0"):
            g.run({tz: np.zeros((1, 4)), tt: bad, tmode: EVALUATE_MODE})


def test_convert_distill_interface_and_refusals():
    base = Path(MODEL).read_bytes()
    result = convert(base, ConvertConfig(distill=2.0))
    assert result.metadata["distill"] == {"temperature": 2.0, "target_header": 2}
    model = TrainableModel(result.model)
    details = model.interpreter.input_details(model.info.input_index("target"))
    assert details["dtype"] == np.float32 and list(details["shape"]) == [1, 12]
    with pytest.raises(ConversionError, match="temperature"):
        ConvertConfig(distill=0.0)
    with pytest.raises(ConversionError, match="needs the cross-entropy loss"):
        convert(base, ConvertConfig(distill=2.0, loss="mse"))
    with pytest.raises(ConversionError, match="int8"):
        convert(base, ConvertConfig(distill=2.0, arithmetic="int8", targets="last:1"))


def test_distillation_step_equals_plain_step_at_weight_zero_and_differs_otherwise(digits_data):
    """A bare label (weight 0) trains exactly as the plain model; a teacher
    row with weight > 0 changes the update, and at the starting adapter the
    teacher is the model itself, so the soft term's gradient there is
    only the quantization and temperature mismatch: small, not zero."""
    base = Path(MODEL).read_bytes()
    x, y = digits_data
    plain = TrainableModel(convert(base, ConvertConfig()).model)
    model = TrainableModel(convert(base, ConvertConfig(distill=2.0)).model)
    teacher = distill.record_teacher(model, x[:8])
    assert np.allclose(teacher.sum(axis=1), 1.0, atol=1e-6)
    for i in range(8):
        assert plain.train_step(x[i], y[i], 0.05) == pytest.approx(model.train_step(x[i], y[i], 0.05), rel=1e-6)
    assert plain.save_state()[64:] == model.save_state()[64:]
    rows = distill.soft_targets(y[8:16], distill.record_teacher(model, x[8:16]), 1.0)
    for i in range(8):
        plain.train_step(x[8 + i], y[8 + i], 0.05)
        model.train_step(x[8 + i], rows[i], 0.05)
    assert plain.save_state()[64:] != model.save_state()[64:]


@pytest.fixture(scope="module")
def digits_data():
    from tflm_train.data import load_npz

    data = load_npz(TRAIN)
    return data.x, data.y


@pytest.fixture(scope="module")
def teacher_harness(tmp_path_factory) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is required")
    out = tmp_path_factory.mktemp("distill") / "distill_harness"
    subprocess.run(
        [compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", f"-I{ROOT / 'tflm_ops'}",
         str(ROOT / "tests/continual/distill_harness.cc"), str(ROOT / "tflm_ops/device/distill.cc"), "-o", str(out)],
        check=True, capture_output=True,
    )
    return out


@pytest.mark.parametrize("logits", [False, True])
def test_device_helper_records_and_packs_as_the_host_does(teacher_harness, logits):
    """device/distill.cc TeacherFromOutput + PackDistillTarget give the rows
    tflm_train.distill makes (float32, within rounding)."""
    rng = np.random.default_rng(5)
    outputs = rng.dirichlet(np.ones(10), size=6).astype(np.float32)
    if logits:
        outputs = rng.normal(0, 4, (6, 10)).astype(np.float32)
    outputs[0, :3] = 0.0
    outputs[1, 2] = -0.001  # a quantized probability a hair below zero
    labels = rng.integers(0, 10, 6)
    lines = [f"{int(logits)} 10 {len(outputs)} 0.75"]
    lines += [f"{int(label)} " + " ".join(f"{v:.9g}" for v in row) for label, row in zip(labels, outputs)]
    done = subprocess.run([str(teacher_harness)], input="\n".join(lines) + "\n", capture_output=True, text=True,
                          check=True)
    got = np.array([[float(v) for v in line.split()] for line in done.stdout.splitlines()], np.float32)
    teacher = np.stack([distill.teacher_from_output(row, logits) for row in outputs])
    want = distill.soft_targets(labels, teacher, 0.75)
    assert got.shape == want.shape
    assert np.allclose(got, want, rtol=1e-6, atol=1e-7)
    assert (got[:, 2:] >= 0).all() and np.allclose(got[:, 2:].sum(axis=1), 1.0, atol=1e-6)


def test_fit_distill_weight_cli(tmp_path):
    converted = tmp_path / "distill.tflite"
    converted.write_bytes(convert(Path(MODEL).read_bytes(), ConvertConfig(distill=2.0)).model)
    out = run_json("fit", str(converted), "--data", TRAIN, "--epochs", "1", "--lr", "0.02", "--distill-weight", "0",
                   "--replay-data", str(Path(TRAIN).parent / "base_retain.npz"), "--replay-bytes", "1120",
                   "--replay-distill-weight", "0.25")
    assert out["distill"] == {"temperature": 2.0, "weight": 0.0, "replay_weight": 0.25, "teacher_bytes": 4 * 10 * 64,
                              "samples": 64}
    assert out["replay"]["record_bytes"] == 64 + 4 * 12  # int8 digit + [label, weight, 10 probabilities]
    assert out["replay"]["held"] == 10 and np.isfinite(out["loss_last"])

def test_distill_weight_needs_a_distill_model():
    from tflm_train.cli import ContinualOptions, run_fit
    from tflm_train.errors import UserError

    plain = convert(Path(MODEL).read_bytes(), ConvertConfig()).model
    with pytest.raises(UserError, match="--distill-weight and --replay-distill-weight need a model converted with"):
        run_fit(plain, TRAIN, [], 1, 0.02, None, 0, continual=ContinualOptions(distill_weight=1.0))


def test_python_api_fit_with_distillation(digits_data):
    import tflm_train

    x, y = digits_data
    model = TrainableModel(convert(Path(MODEL).read_bytes(), ConvertConfig(distill=2.0)).model)
    result = tflm_train.fit(model, x[:16], y[:16], epochs=1, learning_rate=0.02, distill_weight=0.5)
    assert result.steps == 16 and np.isfinite(result.losses).all()
    plain = TrainableModel(convert(Path(MODEL).read_bytes(), ConvertConfig()).model)
    with pytest.raises(tflm_train.TflmTrainError, match="distill_weight needs"):
        tflm_train.fit(plain, x[:4], y[:4], epochs=1, distill_weight=0.5)


def test_episodes_record_the_committed_teacher(tmp_path):
    """`tflm-train episodes --distill-weight`: one accepted episode on a
    --distill model; the option is refused for a plain one."""
    from tflm_train.errors import UserError
    from tflm_train.lifecycle_cli import run_episodes

    base = Path(MODEL).read_bytes()
    distilled = convert(base, ConvertConfig(distill=2.0)).model
    payload, state = run_episodes(distilled, [TRAIN], TRAIN, 16, 1, 0.02, None, 0, distill_weight=0.3)
    assert payload["episodes"][0]["verdict"] == "accept" and len(state) > 0
    with pytest.raises(UserError, match="--distill-weight needs a model converted with --distill"):
        run_episodes(convert(base, ConvertConfig()).model, [TRAIN], TRAIN, 16, 1, 0.02, None, 0, distill_weight=0.3)
