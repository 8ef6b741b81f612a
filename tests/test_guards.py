"""Guards on samples and on the training state (issue 11 item 1, issue 17 item 1).

Each guard is tested on both sides: through the Python API (the host checks)
and by writing straight into the interpreter's tensors, as firmware would, so
that the kernels' own guards are what is tested.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.converter.merge import merge
from tflm_train.converter.model_ir import Model, ModelError
from tflm_train.converter.ops import Mode
from tflm_train.converter.state_format import (
    FLAG_LIVE,
    HEADER_BYTES,
    Header,
    StateError,
    checksum,
    seal,
    validate,
)
from tflm_train.data import DataError
from tflm_train.runtime import InterpreterError
from tflm_train.trainer import TrainableModel, quantize

FLAGS_OFFSET = 44


@pytest.fixture(scope="module")
def float_lora(digits) -> bytes:
    return convert(digits.float_model, ConvertConfig(method="lora", targets="last:2")).model


@pytest.fixture(scope="module")
def int8_lora(digits) -> bytes:
    return convert(digits.int8_model, ConvertConfig(method="lora", targets="last:2")).model


def params_of(model: TrainableModel) -> np.ndarray:
    blob = model.save_state()
    return np.frombuffer(blob, "<f4", count=Header.unpack(blob).param_count, offset=HEADER_BYTES).copy()


def raw_step(model: TrainableModel, x_stored: np.ndarray, target, mode: Mode = Mode.TRAIN, lr: float = 0.02) -> float:
    """One invocation with the tensors written directly (no host checks)."""
    it = model.interpreter
    it.set_input(0, x_stored)
    it.set_input(model.info.input_index("target"), np.asarray(target))
    it.set_input(model.info.input_index("learning_rate"), np.array([lr], np.float32))
    it.set_input(model.info.input_index("mode"), np.array([int(mode)], np.int32))
    it.invoke()
    return float(it.get_output(model.info.output_index("loss"))[0])


def write_state_raw(model: TrainableModel, blob: bytes) -> None:
    model.interpreter.set_input(model.info.input_index("state"), np.frombuffer(blob, np.uint8))


def with_flags(blob: bytes, flags: int) -> bytearray:
    out = bytearray(blob)
    struct.pack_into("<I", out, FLAGS_OFFSET, flags)
    return out


# ---- bad samples are skipped before the step, and counted ---------------------------


@pytest.mark.parametrize("which", ["float", "int8"])
def test_nan_feature_is_skipped_counted_and_changes_nothing(which, float_lora, int8_lora, digits):
    model = TrainableModel(float_lora if which == "float" else int8_lora)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    before = params_of(model)
    x = digits.user_train.x[1].astype(np.float32).copy()
    x.reshape(-1)[7] = np.nan
    loss = model.train_step(x, digits.user_train.y[1], 0.02)
    assert np.isnan(loss)
    header = model.state_header()
    assert (header.skipped_samples, header.skipped, header.step) == (1, 0, 1)
    np.testing.assert_array_equal(params_of(model), before)
    # Training goes on normally afterwards.
    assert np.isfinite(model.train_step(digits.user_train.x[2], digits.user_train.y[2], 0.02))
    assert model.state_header().step == 2


def test_kernel_skips_a_non_finite_float_sample_itself(float_lora, digits):
    """Firmware that skips the helper's checks: TFLMT_STATE rewrites the mode."""
    model = TrainableModel(float_lora)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    before = params_of(model)
    for bad in (np.nan, np.inf, -np.inf):
        x = digits.user_train.x[1].astype(np.float32).reshape(1, -1).copy()
        x[0, 3] = bad
        assert np.isnan(raw_step(model, x, [int(digits.user_train.y[1])]))
    header = model.state_header()
    assert (header.skipped_samples, header.step) == (3, 1)
    np.testing.assert_array_equal(params_of(model), before)


def test_label_outside_the_classes_is_refused_on_the_host(int8_lora, digits):
    model = TrainableModel(int8_lora)
    for label in (10, -1, 2.5, np.nan):
        with pytest.raises(DataError, match="not one of the model's classes"):
            model.train_step(digits.user_train.x[0], label, 0.02)
    with pytest.raises(DataError, match="not one of the model's classes"):
        model.evaluate_loss(digits.user_train.x[0], 12)
    assert model.state_header().step == 0


def test_kernel_skips_a_label_outside_the_classes(int8_lora, digits):
    model = TrainableModel(int8_lora)
    x = quantize(digits.user_train.x[0][None], model.input_details)
    assert np.isnan(raw_step(model, x, [10]))
    assert np.isnan(raw_step(model, x, [-3]))
    header = model.state_header()
    assert (header.skipped_samples, header.step) == (2, 0)
    assert np.isfinite(raw_step(model, x, [int(digits.user_train.y[0])]))
    assert model.state_header().step == 1


def test_non_finite_float_target_is_skipped(digits):
    model = TrainableModel(convert(digits.float_model, ConvertConfig(loss="mse")).model)
    target = np.zeros(model.output_shape, np.float32)
    model.train_step(digits.user_train.x[0], target, 0.02)
    before = params_of(model)
    bad = target.copy()
    bad.reshape(-1)[0] = np.nan
    assert np.isnan(model.train_step(digits.user_train.x[1], bad, 0.02))  # host check
    x = digits.user_train.x[1].astype(np.float32)[None]
    assert np.isnan(raw_step(model, x, bad[None]))  # kernel check (TFLMT_LOSS)
    assert model.state_header().skipped_samples == 2
    np.testing.assert_array_equal(params_of(model), before)


def test_one_bad_sample_no_longer_discards_its_accumulated_batch(digits):
    model_bytes = convert(digits.float_model, ConvertConfig(optimizer=OptimizerConfig(accumulate=4))).model
    good = [(digits.user_train.x[i], digits.user_train.y[i]) for i in range(4)]
    bad_x = digits.user_train.x[9].astype(np.float32).copy()
    bad_x.reshape(-1)[0] = np.nan

    with_bad = TrainableModel(model_bytes)
    for i, (x, y) in enumerate(good):
        if i == 2:
            with_bad.train_step(bad_x, 1, 0.05)
        with_bad.train_step(x, y, 0.05)
    clean = TrainableModel(model_bytes)
    for x, y in good:
        clean.train_step(x, y, 0.05)

    header = with_bad.state_header()
    assert (header.step, header.accumulated, header.skipped, header.skipped_samples) == (1, 0, 0, 1)
    np.testing.assert_array_equal(params_of(with_bad), params_of(clean))
    assert not np.array_equal(params_of(clean), params_of(TrainableModel(model_bytes)))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_update_that_would_be_non_finite_is_not_applied(optimizer, digits):
    """A finite gradient times a finite but huge learning rate must not write
    inf into the adapter: the update is dropped and counted."""
    config = ConvertConfig(method="lora", targets="last:1", optimizer=OptimizerConfig(kind=optimizer))
    model_bytes = convert(digits.float_model, config).model
    model = TrainableModel(model_bytes)
    # Large LoRA A with B still zero: the forward pass is the base model's
    # (finite loss), but B's gradient (d logits x A x) is large.
    blob = bytearray(model.save_state())
    for tensor in model.info.tensors:
        if tensor["role"] == "lora_A":
            start = HEADER_BYTES + 4 * tensor["offset"]
            count = int(np.prod(tensor["shape"]))
            a = np.frombuffer(bytes(blob[start : start + 4 * count]), "<f4") * 1e4
            blob[start : start + 4 * count] = a.astype("<f4").tobytes()
    model.load_state(bytes(seal(blob)))
    before = params_of(model)
    loss = model.train_step(digits.user_train.x[0], digits.user_train.y[0], 1e38)
    assert np.isfinite(loss)  # the sample itself was fine
    state = model.save_state()
    header = Header.unpack(state)
    assert (header.skipped, header.step, header.skipped_samples) == (1, 0, 0)
    np.testing.assert_array_equal(params_of(model), before)
    values = np.frombuffer(state, "<f4", offset=HEADER_BYTES)
    assert np.isfinite(values[2 * header.param_count :]).all()  # optimizer slots untouched
    assert not values[header.param_count : 2 * header.param_count].any()  # gradients cleared
    # A sensible learning rate then trains as usual.
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 1e-6)
    assert model.state_header().step == 1


def test_huge_learning_rate_never_leaves_non_finite_parameters(digits):
    """The issue's scenario: many steps at a huge rate; every state stays loadable."""
    model_bytes = convert(digits.float_model, ConvertConfig(method="lora", targets="last:2")).model
    model = TrainableModel(model_bytes)
    for i in range(20):
        model.train_step(digits.user_train.x[i], digits.user_train.y[i], 3e38)
    state = model.save_state()
    values = np.frombuffer(state, "<f4", offset=HEADER_BYTES, count=Header.unpack(state).param_count)
    assert np.isfinite(values).all()
    TrainableModel(model_bytes).load_state(state)


# ---- the state: verified where it crosses a boundary --------------------------------


def nan_state(model_bytes: bytes, digits) -> bytes:
    """A well-formed state (valid CRC) whose parameters hold a NaN."""
    model = TrainableModel(model_bytes)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    blob = bytearray(model.save_state())
    struct.pack_into("<f", blob, HEADER_BYTES + 4 * 5, np.nan)
    return bytes(seal(blob))


def test_state_with_non_finite_parameters_is_refused_in_python(int8_lora, digits, tmp_path):
    blob = nan_state(int8_lora, digits)
    assert Header.unpack(blob).crc == checksum(blob)
    model = TrainableModel(int8_lora)
    with pytest.raises(StateError, match="non-finite parameters"):
        model.load_state(blob)  # the fit / evaluate path
    with pytest.raises(StateError, match="non-finite parameters"):
        merge(int8_lora, blob)
    with pytest.raises(StateError, match="non-finite parameters"):
        validate(blob, model.info.expected_header(), model.info.state_bytes)


def test_state_with_non_finite_parameters_is_refused_by_the_kernel(int8_lora, digits):
    blob = nan_state(int8_lora, digits)
    model = TrainableModel(int8_lora)
    write_state_raw(model, blob)
    with pytest.raises(InterpreterError, match="TFLMT_STATE: state holds non-finite parameters"):
        model.predict(digits.user_test.x[0])
    model.reset()
    model.predict(digits.user_test.x[0])  # Reset recovers the initial adapter


def test_non_finite_optimizer_slot_is_refused(digits):
    model_bytes = convert(digits.float_model, ConvertConfig(optimizer=OptimizerConfig(kind="adam"))).model
    model = TrainableModel(model_bytes)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.01)
    blob = bytearray(model.save_state())
    p = Header.unpack(bytes(blob)).param_count
    struct.pack_into("<f", blob, HEADER_BYTES + 4 * (3 * p + 1), np.inf)  # Adam's v
    blob = bytes(seal(blob))
    with pytest.raises(StateError, match="non-finite"):
        TrainableModel(model_bytes).load_state(blob)
    fresh = TrainableModel(model_bytes)
    write_state_raw(fresh, blob)
    with pytest.raises(InterpreterError, match="non-finite"):
        fresh.predict(digits.user_test.x[0])


def test_cli_refuses_a_state_with_non_finite_parameters(int8_lora, digits, tmp_path):
    import subprocess
    import sys

    model_path, state_path = tmp_path / "m.tflite", tmp_path / "s.bin"
    model_path.write_bytes(int8_lora)
    state_path.write_bytes(nan_state(int8_lora, digits))
    from tflm_train.demo import example_dir

    data = str(example_dir() / "user_test.npz")
    for command in (["fit", str(model_path), "--data", data, "--state-in", str(state_path)],
                    ["evaluate", str(model_path), "--data", data, "--state", str(state_path)],
                    ["merge", str(model_path), "--state", str(state_path), "-o", str(tmp_path / "out.tflite")]):
        result = subprocess.run([sys.executable, "-m", "tflm_train.cli", *command], capture_output=True, text=True)
        assert result.returncode == 2, (command, result.stderr)
        assert "non-finite parameters" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.tflite").exists()


@pytest.mark.parametrize(
    "damage, python_says, kernel_says",
    [
        (lambda b: b.__setitem__(slice(0, 4), b"XXXX"), "bad magic", "bad magic"),
        (lambda b: struct.pack_into("<H", b, 4, 7), "format version", "format version"),
        (lambda b: b.__setitem__(8, b[8] ^ 1), "another base model", "another base model"),
        (lambda b: b.__setitem__(16, b[16] ^ 1), "another conversion", "another conversion"),
        (lambda b: b.__setitem__(HEADER_BYTES + 3, b[HEADER_BYTES + 3] ^ 0x10), "checksum", "checksum"),
    ],
)
def test_every_refusal_of_an_imported_state_still_happens(int8_lora, digits, damage, python_says, kernel_says):
    model = TrainableModel(int8_lora)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    blob = bytearray(model.save_state())
    damage(blob)
    fresh = TrainableModel(int8_lora)
    with pytest.raises(StateError, match=python_says):
        fresh.load_state(bytes(blob))
    write_state_raw(fresh, bytes(blob))  # as firmware would, LIVE clear
    with pytest.raises(InterpreterError, match=kernel_says):
        fresh.predict(digits.user_test.x[0])


def test_foreign_header_is_refused_even_when_marked_live(int8_lora, digits):
    """LIVE skips only the payload scans: the header is compared every time."""
    model = TrainableModel(int8_lora)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    blob = with_flags(model.save_state(), FLAG_LIVE)
    blob[8] ^= 1  # base model hash
    write_state_raw(model, bytes(blob))
    with pytest.raises(InterpreterError, match="another base model"):
        model.predict(digits.user_test.x[0])


def test_checksum_is_checked_at_the_boundary_not_per_step(int8_lora, digits):
    model = TrainableModel(int8_lora)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    exported = model.save_state()
    wrong_crc = bytearray(exported)
    struct.pack_into("<I", wrong_crc, 36, Header.unpack(exported).crc ^ 0xDEADBEEF)
    # LIVE set: a state this interpreter verified; its CRC is not re-checked.
    live = TrainableModel(int8_lora)
    write_state_raw(live, bytes(with_flags(wrong_crc, FLAG_LIVE)))
    live.predict(digits.user_test.x[0])
    live.train_step(digits.user_train.x[1], digits.user_train.y[1], 0.02)
    assert live.state_header().step == 2
    # LIVE clear: an imported state; the kernel checks the CRC.
    imported = TrainableModel(int8_lora)
    write_state_raw(imported, bytes(with_flags(wrong_crc, 0)))
    with pytest.raises(InterpreterError, match="checksum"):
        imported.predict(digits.user_test.x[0])
    # Training steps leave the CRC field alone (no per-step sealing) ...
    model.predict(digits.user_test.x[0])
    raw = model.interpreter.get_output(model.info.output_index("state")).tobytes()
    crc_in_tensor = Header.unpack(raw).crc
    for i in range(1, 5):
        model.train_step(digits.user_train.x[i], digits.user_train.y[i], 0.02)
    raw = model.interpreter.get_output(model.info.output_index("state")).tobytes()
    assert Header.unpack(raw).crc == crc_in_tensor and Header.unpack(raw).flags & FLAG_LIVE
    # ... and an export seals: LIVE clear, CRC valid.
    saved = model.save_state()
    assert Header.unpack(saved).flags & FLAG_LIVE == 0
    assert Header.unpack(saved).crc == checksum(saved) != crc_in_tensor


def test_loaded_state_is_verified_again_and_resets_first(int8_lora, digits):
    model = TrainableModel(int8_lora)
    for i in range(3):
        model.train_step(digits.user_train.x[i], digits.user_train.y[i], 0.02)
    saved = model.save_state()
    # A corrupt state sits in the tensor; load_state replaces it (after a
    # Reset) and the next invocation verifies the loaded one.
    write_state_raw(model, bytes(with_flags(saved, 0))[:-4] + b"\xff\xff\xff\x7f")
    header = model.load_state(saved)
    assert header.step == 3
    model.predict(digits.user_test.x[0])
    raw = model.interpreter.get_output(model.info.output_index("state")).tobytes()
    assert Header.unpack(raw).flags & FLAG_LIVE  # verified by the kernel
    assert model.save_state() == saved


def test_old_state_files_without_flags_still_load(int8_lora, digits):
    """Format version 1 files from before the flags field: zero there."""
    model = TrainableModel(int8_lora)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    saved = model.save_state()
    assert saved[44:52] == bytes(8)  # flags and skipped samples: zero, as in older files
    fresh = TrainableModel(int8_lora)
    fresh.load_state(saved)
    np.testing.assert_array_equal(fresh.predict(digits.user_test.x[0]), model.predict(digits.user_test.x[0]))


# ---- damaged converted models ------------------------------------------------------


def retyped(model_bytes: bytes, role: str, kind: str, shape) -> bytes:
    model = Model.from_bytes(model_bytes)
    info = TrainableModel(model_bytes).info
    index = info.input_index(role) if kind == "input" else info.output_index(role)
    tensors = model.main.inputs if kind == "input" else model.main.outputs
    model.tensors[int(tensors[index])].shape = np.asarray(shape, np.int32)
    return model.sealed_bytes()  # checksum recomputed: the interface checks still refuse it


@pytest.mark.parametrize("role, kind, shape", [("mode", "input", [2]), ("loss", "output", []), ("learning_rate", "input", [1, 2])])
def test_damaged_interface_is_one_model_error(int8_lora, role, kind, shape):
    damaged = retyped(int8_lora, role, kind, shape)
    with pytest.raises(ModelError, match=f"{role} {kind} is .* expected"):
        TrainableModel(damaged)


def test_loss_without_its_mode_input_is_refused_in_prepare(int8_lora):
    """Was a SIGSEGV in Eval (issue 11 item 2)."""
    model = Model.from_bytes(int8_lora)
    for op in model.operators:
        if model.op_type(op) == "TFLMT_LOSS":
            op.inputs = np.asarray(list(op.inputs[:2]) + [-1], np.int32)
    with pytest.raises(InterpreterError, match="TFLM could not prepare"):
        TrainableModel(model.sealed_bytes())


def test_fit_mean_loss_leaves_out_a_skipped_sample(digits):
    """fit() over data with one NaN sample: the sample is skipped and counted,
    and the epoch's mean loss is over the samples that trained (not NaN)."""
    from tflm_train import fitting

    model = TrainableModel(convert(digits.int8_model, ConvertConfig(method="bias")).model)
    x = np.asarray(digits.user_train.x[:8], np.float32).copy()
    y = np.asarray(digits.user_train.y[:8])
    x[3].flat[0] = np.nan
    result = fitting.fit(model, x, y, fitting.task_of(model), epochs=1, learning_rate=0.01)
    assert np.isfinite(result.epoch_losses[0])
    assert sum(not np.isfinite(loss) for loss in result.losses) == 1
    assert model.state_header().skipped_samples == 1
