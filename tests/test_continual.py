"""Continual learning: L2-SP / EWC in the optimizer op, the Fisher diagonal,
the replay buffer (Python and the device helper), fit --retain-data / --replay-*.

The regularized steps and the Fisher diagonal are compared with TensorFlow
(tf.GradientTape on loss + penalty, Keras optimizers) on the float digits
model; the replay buffer's decisions with tflm_ops/device/replay.cc compiled
for the host, and replay.cc is compiled for Cortex-M4 with -Werror.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from graphs import relative_error
from lazy_tensorflow import tf
from test_cli import EXAMPLE, MODEL, TEST, TRAIN, assert_user_error, run, run_json
from tflm_train import continual, fitting
from tflm_train.converter import ConversionError, ConvertConfig, OptimizerConfig, constants, convert
from tflm_train.converter.state_format import Header, parameters
from tflm_train.data import load_npz
from tflm_train.trainer import TrainableModel

ROOT = Path(__file__).resolve().parents[1]
RETAIN = str(EXAMPLE / "base_retain.npz")
BASE_TEST = str(EXAMPLE / "base_test.npz")
STEPS = 12


def lora(regularizer="none", reg_lambda=0.0, fisher=None, **optimizer) -> ConvertConfig:
    return ConvertConfig(
        method="lora", r=3, targets="last:3", optimizer=OptimizerConfig(**optimizer),
        regularizer=regularizer, reg_lambda=reg_lambda, fisher=fisher,
    )


def synthetic_fisher(digits) -> np.ndarray:
    """Per-parameter weights of very different sizes, so a wrong index shows."""
    count = TrainableModel(convert(digits.float_model, lora()).model).info.param_count
    return np.random.default_rng(3).uniform(0.0, 4.0, count).astype(np.float32)


def params_of(model: TrainableModel) -> np.ndarray:
    state = model.save_state()
    return parameters(state, Header.unpack(state))


# ---- the penalty in the kernels, against TensorFlow -------------------------------------------
REGULARIZED_CASES = {
    # name: (regularizer, lambda, optimizer fields, learning rate, keras optimizer, its arguments)
    "l2sp-sgd": ("l2sp", 2.0, {}, 0.1, "SGD", {}),
    "l2sp-adam": ("l2sp", 0.5, {"kind": "adam"}, 0.01, "Adam", {"epsilon": 1e-7}),
    "ewc-sgd-accumulate-3": ("ewc", 1.5, {"accumulate": 3}, 0.2, "SGD", {}),
    "ewc-momentum-clip": ("ewc", 1.0, {"kind": "momentum", "momentum": 0.9, "clip_norm": 0.5}, 0.05, "SGD",
                          {"momentum": 0.9}),
}


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(REGULARIZED_CASES))
def test_regularized_steps_match_tensorflow(digits, name):
    """TFLM's parameters after STEPS samples equal TensorFlow's, trained on
    data loss + lambda/2 sum F (w - w0)^2 (F = 1 for L2-SP) through
    tf.GradientTape and the Keras optimizer: mean data gradient of each
    batch plus the penalty's gradient, clipped together."""
    from tf_reference import ConvertedModel

    regularizer, lam, optimizer, lr, keras_name, keras_args = REGULARIZED_CASES[name]
    fisher = synthetic_fisher(digits) if regularizer == "ewc" else None
    config = lora(regularizer, lam, fisher, **optimizer)
    result = convert(digits.float_model, config)
    model = TrainableModel(result.model)
    w0 = params_of(model)
    xs, ys = digits.user_train.x[:STEPS], digits.user_train.y[:STEPS]
    for x, y in zip(xs, ys):
        model.train_step(x, y, lr)
    got = params_of(model)

    reference = ConvertedModel(digits.float_model, result.metadata, w0)
    weights = np.ones_like(w0) if fisher is None else fisher
    anchors = [tf.constant(np.asarray(v)) for v in reference.variables]
    f_parts = [
        tf.constant(weights[t["offset"] : t["offset"] + int(np.prod(t["shape"]))].reshape(t["shape"]))
        for t in reference.tensors
    ]
    keras_optimizer = getattr(tf.keras.optimizers, keras_name)(lr, **keras_args)
    accumulate = config.optimizer.accumulate
    pending = []
    for x, y in zip(xs, ys):
        pending.append(reference.gradients(lambda: reference.class_loss(x, int(y))))
        if len(pending) < accumulate:
            continue
        data = [tf.add_n([g[i] for g in pending]) / accumulate for i in range(len(reference.variables))]
        with tf.GradientTape() as tape:
            penalty = lam / 2 * tf.add_n(
                [tf.reduce_sum(f * tf.square(v - a)) for v, a, f in zip(reference.variables, anchors, f_parts)]
            )
        grads = [d + p for d, p in zip(data, tape.gradient(penalty, reference.variables))]
        if config.optimizer.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, config.optimizer.clip_norm)
        keras_optimizer.apply_gradients(zip(grads, reference.variables))
        pending = []
    want = reference.flat()

    unregularized = TrainableModel(convert(digits.float_model, lora(**optimizer)).model)
    for x, y in zip(xs, ys):
        unregularized.train_step(x, y, lr)
    # The penalty changed the result (else this compares nothing new)...
    assert relative_error(params_of(unregularized), got) > 1e-3
    # ...and TFLM took TensorFlow's steps.
    assert relative_error(got, want) < 1e-4, relative_error(got, want)


@pytest.mark.tf
def test_fisher_diagonal_matches_tensorflow(digits):
    """The Fisher diagonal the interpreter measures equals the mean squared
    per-sample gradient TensorFlow computes at w0."""
    from tf_reference import ConvertedModel

    config = lora()
    base = load_npz(RETAIN)
    x, y = base.x[:24], base.y[:24]
    fisher = continual.fisher_diagonal(digits.float_model, config, x, y)
    result = convert(digits.float_model, config)
    w0 = params_of(TrainableModel(result.model))
    reference = ConvertedModel(digits.float_model, result.metadata, w0)
    squares = [
        reference.flat(reference.gradients(lambda: reference.class_loss(xi, int(yi)))) ** 2 for xi, yi in zip(x, y)
    ]
    want = np.mean(squares, axis=0)
    assert np.count_nonzero(want) > 50  # B's and the biases' gradients are not zero
    assert relative_error(fisher, want) < 1e-4


def test_fisher_is_zero_for_lora_a_at_initialization(digits):
    """LoRA's B starts at zero, so the loss does not depend on A there:
    EWC protects B (the update that changes the layer) and leaves A free."""
    config = lora()
    base = load_npz(RETAIN)
    model = TrainableModel(convert(digits.int8_model, config).model)
    x, y = fitting.prepare(model, base, fitting.task_of(model), RETAIN)
    fisher = continual.fisher_diagonal(digits.int8_model, config, x[:20], y[:20])
    tensors = model.info.raw["state"]["tensors"]
    for t in tensors:
        part = fisher[t["offset"] : t["offset"] + int(np.prod(t["shape"]))]
        if t["role"] == "lora_A":
            assert not part.any(), t["name"]
        else:
            assert part.any() and (part >= 0).all(), t["name"]


def test_strong_l2sp_keeps_the_adapter_at_its_start(digits):
    """The penalty works in the int8 model too: with lambda * lr = 1 (SGD),
    each update first returns to w0, so the adapter moves only by one
    step's data gradient; without it the adapter drifts further each step."""
    x, y = digits.user_train.x[:16], digits.user_train.y[:16]
    drift = {}
    for regularizer, lam in (("none", 0.0), ("l2sp", 50.0)):
        model = TrainableModel(convert(digits.int8_model, lora(regularizer, lam)).model)
        w0 = params_of(model)
        for xi, yi in zip(x, y):
            model.train_step(xi, yi, 0.02)
        drift[regularizer] = float(np.linalg.norm(params_of(model) - w0))
    assert drift["l2sp"] < 0.25 * drift["none"], drift


def test_regularizer_costs_no_state_and_keeps_the_state_format(digits):
    """w0 is the initial state and F a constant: a state of the plain
    conversion loads into the regularized one and vice versa."""
    plain = TrainableModel(convert(digits.int8_model, lora()).model)
    fisher = synthetic_fisher(digits)
    result = convert(digits.int8_model, lora("ewc", 1.0, fisher))
    regularized = TrainableModel(result.model)
    assert regularized.info.state_bytes == plain.info.state_bytes
    assert result.metadata["regularizer"]["kind"] == "ewc"
    plain.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.05)
    regularized.load_state(plain.save_state())
    np.testing.assert_array_equal(params_of(regularized), params_of(plain))


def test_unregularized_models_keep_options_version_1(digits):
    from tflm_train.converter.model_ir import Model

    for config, version in ((lora(), 1), (lora("l2sp", 1.0), constants.OPTIMIZER_REGULARIZED_VERSION)):
        model = Model.from_bytes(convert(digits.int8_model, config).model)
        (op,) = [op for op in model.operators if model.op_type(op) == constants.OPTIMIZER]
        assert bytes(op.customOptions)[0] == version
        assert len(model.inputs_of(op)) == (3 if version == 1 else 4)


@pytest.mark.parametrize(
    "fields, phrase",
    [
        ({"regularizer": "ewc", "reg_lambda": 1.0}, "--retain-data"),
        ({"regularizer": "l2sp"}, "--reg-lambda > 0"),
        ({"reg_lambda": 1.0}, "needs --regularizer"),
        ({"regularizer": "l2sp", "reg_lambda": float("nan")}, "finite"),
        ({"regularizer": "ewc", "reg_lambda": 1.0, "fisher": np.ones(3, np.float32)}, "Fisher diagonal has 3 values"),
        ({"regularizer": "l2sp", "reg_lambda": 1.0, "fisher": np.ones(3, np.float32)}, "ewc only"),
        ({"regularizer": "bogus", "reg_lambda": 1.0}, "--regularizer must be one of"),
    ],
)
def test_bad_regularizer_options_are_refused(digits, fields, phrase):
    with pytest.raises(ConversionError) as error:
        convert(digits.int8_model, ConvertConfig(method="lora", targets="last:3", **fields))
    assert phrase in str(error.value)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_a_fisher_diagonal_with_bad_values_is_refused(digits, bad):
    fisher = synthetic_fisher(digits)
    fisher[7] = bad
    with pytest.raises(ConversionError, match="finite values >= 0"):
        convert(digits.int8_model, lora("ewc", 1.0, fisher))


def test_regularizer_enum_and_version_match_the_kernels():
    from test_constants import CONSTANTS_H, cpp_enums, normalized

    header = CONSTANTS_H.read_text()
    cpp = {normalized(k): v for k, v in cpp_enums(header)["RegularizerKind"].items()}
    python = {normalized(k): int(v) for k, v in constants.RegularizerKind.__members__.items()}
    assert cpp == python
    version = re.search(r"constexpr\s+uint8_t\s+kOptimizerRegularizedVersion\s*=\s*(\d+)\s*;", header)
    assert version and int(version.group(1)) == constants.OPTIMIZER_REGULARIZED_VERSION
    assert constants.OPTIMIZER_REGULARIZED_VERSION != constants.OPTIONS_VERSIONS[constants.OPTIMIZER]


# ---- replay buffer ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replay_harness(tmp_path_factory) -> Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    assert compiler, "a C++ compiler is needed (the kernel plugin needs one too)"
    out = tmp_path_factory.mktemp("replay") / "replay_harness"
    subprocess.run(
        [compiler, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-fno-rtti",
         f"-I{ROOT / 'tflm_ops'}", str(ROOT / "tests/continual/replay_harness.cc"),
         str(ROOT / "tflm_ops/device/replay.cc"), "-o", str(out)],
        check=True, capture_output=True,
    )
    return out


def python_decisions(budget, input_bytes, target_bytes, seed, every, offers, steps) -> list[str]:
    """What replay_harness prints, from tflm_train.continual.ReplayBuffer."""
    buffer = continual.ReplayBuffer(budget, input_bytes, target_bytes, seed=seed, every=every)
    lines = [f"capacity {buffer.capacity}"]
    for i in range(offers):
        sample = bytes((i + j) & 0xFF for j in range(input_bytes))
        target = np.int32(i).tobytes() + bytes(target_bytes - 4)
        lines.append(f"offer {buffer.offer(sample, target)}")
    for _ in range(steps):
        due = buffer.replay_due()
        lines.append(f"due {int(due)}")
        if due:
            sample, target = buffer.record(buffer.pick())
            held = int(np.frombuffer(target[:4], np.int32)[0])
            assert sample[0] == held & 0xFF
            lines.append(f"pick {held}")
    return lines


@pytest.mark.parametrize(
    "budget, input_bytes, target_bytes, seed, every, offers, steps",
    [
        (2048, 64, 4, 0, 1, 300, 200),  # the digits example's records
        (6040, 600, 4, 7, 2, 40, 120),  # BasicMotions'
        (1000, 16, 8, 123456789, 3, 5000, 300),  # far more offers than room
        (100, 30, 4, 1, 1, 2, 10),  # fewer offers than room
    ],
)
def test_python_and_device_replay_pick_the_same_samples(replay_harness, budget, input_bytes, target_bytes, seed,
                                                        every, offers, steps):
    args = [budget, input_bytes, target_bytes, seed, every, offers, steps]
    device = subprocess.run([str(replay_harness), *map(str, args)], capture_output=True, text=True, check=True)
    device_lines = device.stdout.split()
    device_lines = [" ".join(device_lines[i : i + 2]) for i in range(0, len(device_lines), 2)]
    assert device_lines == python_decisions(*args)
    assert any(line.startswith("pick") for line in device_lines)


def test_reservoir_keeps_every_sample_with_the_same_chance():
    """Algorithm R: after n offers each is held with probability capacity / n."""
    offers, capacity, trials = 50, 10, 4000
    held = np.zeros(offers)
    for seed in range(trials):
        buffer = continual.ReplayBuffer(capacity * 5, 1, 4, seed=seed + 1)
        for i in range(offers):
            buffer.offer(bytes([i]), np.int32(i).tobytes())
        held[buffer.sources] += 1
    expected = trials * capacity / offers  # 800
    assert np.abs(held - expected).max() < 0.15 * expected, held


def test_replayed_records_quantize_back_to_their_bytes(digits):
    model = TrainableModel(convert(digits.int8_model, lora()).model)
    x, y = fitting.prepare(model, load_npz(RETAIN), fitting.task_of(model), RETAIN)
    buffer = continual.fill_replay(model, x, y, 68 * 40, every=1, seed=5)
    assert buffer.record_bytes == 64 + 4 and buffer.capacity == 40 and buffer.seen == len(x)
    from tflm_train.trainer import quantize

    for slot in range(buffer.capacity):
        real_x, label = continual.replayed_sample(model, buffer, slot)
        raw_x, raw_y = buffer.record(slot)
        assert quantize(real_x[None], model.input_details).tobytes() == raw_x
        assert np.int32(label).tobytes() == raw_y
        source = buffer.sources[slot]
        assert label == y[source]


def test_replay_source_is_compiled_for_cortex_m4_without_heap(tmp_path):
    compiler = shutil.which("arm-none-eabi-g++")
    assert compiler, "gcc-arm-none-eabi is needed (.ci/run installs it)"
    obj = tmp_path / "replay.o"
    subprocess.run(
        [compiler, "-std=c++17", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os",
         "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-fno-rtti", "-c",
         str(ROOT / "tflm_ops/device/replay.cc"), f"-I{ROOT / 'tflm_ops'}", "-o", str(obj)],
        check=True, capture_output=True,
    )
    symbols = subprocess.run([shutil.which("arm-none-eabi-nm"), str(obj)], capture_output=True, text=True,
                             check=True).stdout
    assert "ReplayBuffer5Offer" in symbols
    for forbidden in ("malloc", "_Znw", "_Znaj", "__cxa_throw", "free"):
        assert forbidden not in symbols, forbidden
    assert not re.search(r" [BbDd] ", symbols), "replay.cc must hold no mutable globals"


# ---- the command line -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_train(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("continual") / "digits_train.tflite"
    result = run("convert", MODEL, "-o", str(path), "--targets", "last:3")
    assert result.returncode == 0, result.stderr
    return str(path)


def test_fit_reports_forgetting_and_replay_lowers_it(digits_train):
    common = ("fit", digits_train, "--data", TRAIN, "--eval-data", TEST, "--retain-data", BASE_TEST,
              "--epochs", "6", "--lr", "0.02")
    plain = run_json(*common)
    replayed = run_json(*common, "--replay-data", RETAIN, "--replay-bytes", "4096", "--replay-every", "1")
    for payload in (plain, replayed):
        retain = payload["retain"]
        assert retain["data"] == BASE_TEST
        assert retain["forgetting"] == pytest.approx(retain["metric_before"] - retain["metric_after"])
        assert [e["data"] for e in payload["eval"]] == [TEST]  # the retain set is reported apart
    assert plain["retain"]["metric_before"] == replayed["retain"]["metric_before"]
    assert plain["retain"]["forgetting"] > 0.03  # fine-tuning alone forgets...
    assert replayed["retain"]["forgetting"] < plain["retain"]["forgetting"] - 0.02  # ...replay much less
    replay = replayed["replay"]
    assert replay["record_bytes"] == 68 and replay["capacity"] == 4096 // 68 == replay["held"]
    assert replay["bytes"] == replay["capacity"] * 68 <= 4096
    assert replay["offered"] == 300 and replay["steps"] == plain["steps"] == replayed["steps"]
    assert "replay" not in plain


def test_fit_text_names_the_original_task(digits_train):
    result = run("fit", digits_train, "--data", TRAIN, "--retain-data", BASE_TEST, "--epochs", "1",
                 "--replay-data", RETAIN, "--replay-bytes", "680")
    assert result.returncode == 0, result.stderr
    outcome = r"(forgot [\d.]+ points|gained [\d.]+ points|nothing forgotten)"
    assert re.search(rf"base_test\.npz: 96\.0% before, [\d.]+% after \(original task: {outcome}\)", result.stdout), (
        result.stdout
    )
    assert "replay buffer: 10 of 300 original-task samples in 680 bytes (68 per sample)" in result.stdout


@pytest.mark.parametrize(
    "args, phrases",
    [
        (("--replay-data", RETAIN), ("--replay-bytes",)),
        (("--replay-bytes", "100"), ("need --replay-data",)),
        (("--replay-data", RETAIN, "--replay-bytes", "10"), ("holds no sample", "68 bytes")),
        (("--replay-data", RETAIN, "--replay-bytes", "680", "--replay-every", "0"), ("--replay-every",)),
        (("--retain-data", "/no/such.npz"), ("/no/such.npz",)),
    ],
)
def test_fit_continual_options_errors(digits_train, args, phrases):
    assert_user_error(run("fit", digits_train, "--data", TRAIN, "--epochs", "1", *args), *phrases)


def test_convert_ewc_from_the_command_line(tmp_path):
    out = tmp_path / "ewc.tflite"
    summary = run_json("convert", MODEL, "-o", str(out), "--targets", "last:3", "--regularizer", "ewc",
                       "--reg-lambda", "1000", "--retain-data", RETAIN)
    regularizer = summary["regularizer"]
    assert regularizer["kind"] == "ewc" and regularizer["lambda"] == 1000
    assert regularizer["fisher_bytes"] == 4 * summary["trainable_params"]
    assert any(note.startswith("EWC: Fisher diagonal from 300 samples") for note in summary["notes"])
    payload = run_json("fit", str(out), "--data", TRAIN, "--epochs", "1", "--retain-data", BASE_TEST)
    assert payload["optimizer_steps"] == 64


@pytest.mark.parametrize(
    "args, phrases",
    [
        (("--regularizer", "ewc", "--reg-lambda", "1"), ("--retain-data",)),
        (("--regularizer", "l2sp"), ("--reg-lambda > 0",)),
        (("--retain-data", RETAIN), ("--regularizer ewc",)),
        (("--regularizer", "ewc", "--reg-lambda", "1", "--retain-data", RETAIN, "--board", "pico"), ("--targets",)),
        (("--regularizer", "ewc", "--reg-lambda", "1", "--retain-data", TRAIN + ".missing"), ("missing",)),
    ],
)
def test_convert_regularizer_errors(tmp_path, args, phrases):
    out = tmp_path / "x.tflite"
    assert_user_error(run("convert", MODEL, "-o", str(out), *args), *phrases)
    assert not out.exists()
