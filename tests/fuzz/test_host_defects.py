"""Regression tests for host-side input defects found by hand and by fuzzing
(issue 11, item 2): each failed on the code before its fix."""

from __future__ import annotations

import importlib.resources
import sys
import textwrap

import numpy as np
import pytest

from tflm_train import memory
from tflm_train.cli import main
from tflm_train.converter.model_ir import ModelError, write_atomic
from tflm_train.data import DataError, load_npz


def _run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


# ---- data files ------------------------------------------------------------------------
def test_zero_dimensional_arrays_in_an_npz_are_one_data_error(tmp_path):
    path = tmp_path / "scalar.npz"
    np.savez(path, x=np.float32(1.5), y=np.int32(3))
    with pytest.raises(DataError, match=r"'x' is a single value \(0-d array\)"):
        load_npz(path)
    np.savez(path, x=np.zeros((4, 64), np.float32), y=np.int32(3))
    with pytest.raises(DataError, match=r"'y' is a single value"):
        load_npz(path)


def test_a_plain_npy_given_as_data_is_one_data_error(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 64), np.float32))
    with pytest.raises(DataError, match=r"single \.npy array; the data must be an \.npz with arrays x and y"):
        load_npz(path)


def test_unreadable_npz_members_are_one_data_error(tmp_path):
    """(Held before too; kept as the fuzzer's baseline for member errors.)"""
    # An object array (needs pickle) and a member whose .npy header is garbage.
    path = tmp_path / "object.npz"
    np.savez(path, x=np.array([None, 1], dtype=object), y=np.zeros(2, np.int32))
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(path)
    import zipfile

    with zipfile.ZipFile(tmp_path / "garbage.npz", "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}\n    ")
        archive.writestr("y.npy", b"")
    with pytest.raises(DataError, match="not a readable .npz") as caught:
        load_npz(tmp_path / "garbage.npz")
    assert "\n" not in str(caught.value)


def test_one_label_per_sample_in_any_layout(tmp_path):
    """Labels as (N,) or (N, 1) are accepted; (N, 0) is refused, not reshaped."""
    from tflm_train.data import Dataset, check_labels

    with pytest.raises(DataError, match="one class label per sample"):
        check_labels(Dataset(np.zeros((3, 64)), np.zeros((3, 0), np.int32)), 10)
    np.testing.assert_array_equal(check_labels(Dataset(np.zeros((3, 64)), np.array([[1], [2], [0]])), 10), [1, 2, 0])


def test_cli_refuses_a_npy_as_data_in_one_line(tmp_path, capsys, digits):
    model = tmp_path / "train.tflite"
    code, err = _run_cli(capsys, "convert", str(tmp_path / "missing.tflite"), "-o", str(model))
    assert code == 2
    (tmp_path / "base.tflite").write_bytes(digits.int8_model)
    code, _ = _run_cli(capsys, "convert", str(tmp_path / "base.tflite"), "-o", str(model), "--json")
    assert code == 0
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((4, 64), np.float32))
    code, err = _run_cli(capsys, "evaluate", str(model), "--data", str(data))
    assert code == 2
    assert err.count("\n") == 1 and ".npy array" in err, err


# ---- writing through symbolic links -------------------------------------------------------
def test_output_on_a_dangling_symlink_writes_its_target(tmp_path):
    link = tmp_path / "out.tflite"
    link.symlink_to("models/train.tflite")
    (tmp_path / "models").mkdir()
    write_atomic(link, b"model bytes")
    assert link.is_symlink()  # the link is kept, not replaced by a file
    assert (tmp_path / "models" / "train.tflite").read_bytes() == b"model bytes"
    write_atomic(link, b"second")  # a live link: written through as well
    assert link.is_symlink() and (tmp_path / "models" / "train.tflite").read_bytes() == b"second"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["train.tflite"]  # no temp file left


def test_output_on_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError, match="symbolic links"):
        write_atomic(tmp_path / "a", b"data")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()


def test_cli_convert_to_a_dangling_symlink(tmp_path, capsys, digits):
    (tmp_path / "base.tflite").write_bytes(digits.int8_model)
    link = tmp_path / "train.tflite"
    link.symlink_to("target.tflite")
    code, err = _run_cli(capsys, "convert", str(tmp_path / "base.tflite"), "-o", str(link), "--json")
    assert code == 0, err
    assert link.is_symlink() and (tmp_path / "target.tflite").read_bytes()[4:8] == b"TFL3"
    dangling_into_nowhere = tmp_path / "nowhere.tflite"
    dangling_into_nowhere.symlink_to("no/such/dir/x.tflite")
    code, err = _run_cli(capsys, "convert", str(tmp_path / "base.tflite"), "-o", str(dangling_into_nowhere))
    assert code == 2 and err.count("\n") == 1 and "No such file or directory" in err, err


# ---- a model the stock interpreter crashes on ---------------------------------------------
# hey_jarvis (pymicro-wakeword) with these 8 bytes zeroed: the flatbuffer still
# parses, passes every structural check and converts, but TFLM's planner
# segfaults on it while allocating tensors. Found by trying every 4-byte
# aligned offset of the flatbuffer's tables (tests/fuzz/README in the
# README's Reliability section).
HEY_JARVIS_CRASH_OFFSET = 27908


@pytest.fixture(scope="module")
def hey_jarvis():
    return (importlib.resources.files("pymicro_wakeword") / "models" / "hey_jarvis.tflite").read_bytes()


@pytest.mark.wakeword
def test_check_prepares_refuses_a_model_the_interpreter_crashes_on(hey_jarvis):
    from tflm_train.converter import ConvertConfig, convert

    memory.check_prepares(hey_jarvis)  # the real model prepares
    broken = bytearray(hey_jarvis)
    broken[HEY_JARVIS_CRASH_OFFSET:HEY_JARVIS_CRASH_OFFSET + 8] = bytes(8)
    broken = bytes(broken)
    convert(broken, ConvertConfig(method="head"))  # convert alone does not notice
    with pytest.raises(ModelError, match=r"the TFLM interpreter crashes \(SIGSEGV\) on this model: corrupt .tflite") as caught:
        memory.check_prepares(broken)
    assert "\n" not in str(caught.value)


@pytest.mark.wakeword
def test_convert_refuses_a_model_the_interpreter_crashes_on(hey_jarvis, tmp_path, capsys):
    """`tflm-train convert` prepares the original first (guarded): one line, exit 2, no output."""
    broken = bytearray(hey_jarvis)
    broken[HEY_JARVIS_CRASH_OFFSET:HEY_JARVIS_CRASH_OFFSET + 8] = bytes(8)
    (tmp_path / "broken.tflite").write_bytes(bytes(broken))
    out = tmp_path / "train.tflite"
    code, err = _run_cli(capsys, "convert", str(tmp_path / "broken.tflite"), "-o", str(out), "--method", "head")
    assert code == 2 and err.count("\n") == 1 and "crashes (SIGSEGV)" in err, err
    assert not out.exists()


def test_check_prepares_names_why_a_model_does_not_prepare(digits):
    from tflm_train.converter.model_ir import Model

    memory.check_prepares(digits.int8_model)
    model = Model.from_bytes(digits.int8_model)
    op = model.operators[0]
    op.inputs = np.asarray(list(op.inputs)[:1], np.int32)  # a FULLY_CONNECTED without weights
    with pytest.raises(ModelError, match="cannot run this model"):
        memory.check_prepares(model.to_bytes())


# ---- the arena probe and sanitizer reports ---------------------------------------------------
def _fake_worker(monkeypatch, tmp_path, body: str) -> None:
    """Replaces the probe's worker by a script: it gets each arena size as
    `arena` and answers like tflm_train._arena_probe, or dies."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""\
        import os, signal, sys
        def sanitizer_log(text):
            # Where a sanitizer writes when ASAN_OPTIONS has log_path (the probe sets it).
            options = dict(o.split("=", 1) for o in os.environ["ASAN_OPTIONS"].split(":") if "=" in o)
            with open(f"{options['log_path']}.{os.getpid()}", "w") as f:
                f.write(text)
        for line in sys.stdin:
            arena = int(line)
        """) + textwrap.indent(textwrap.dedent(body), "    "))
    monkeypatch.setattr(memory._Prober, "command", lambda self: [sys.executable, str(script)])


def test_a_crashing_worker_means_too_small(monkeypatch, tmp_path):
    # Like the wheel's planner: a segfault for arenas just too small.
    _fake_worker(monkeypatch, tmp_path, """\
        if arena < 5000:
            os.kill(os.getpid(), signal.SIGSEGV)
        print(1, flush=True)
        """)
    assert memory.smallest_arena(b"model") == 5008  # 16-byte steps above the last crash


@pytest.mark.parametrize("where", ["stderr", "log_path"])
@pytest.mark.parametrize("report", [
    "==4242==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000014",
    "tflm_ops/kernels/loss.cc:88:17: runtime error: load of null pointer of type 'const int'",
])
def test_a_sanitizer_report_is_not_too_small(monkeypatch, tmp_path, where, report):
    _fake_worker(monkeypatch, tmp_path, f"""\
        if arena < 5000:
            text = "=================================================================\\n{report}\\n    #0 0x1 in f\\n"
            if "{where}" == "stderr":
                sys.stderr.write(text)
                sys.stderr.flush()
            else:
                sanitizer_log(text)
            os.abort()
        print(1, flush=True)
        """)
    with pytest.raises(memory.SanitizerReport) as caught:
        memory.smallest_arena(b"model")
    assert str(caught.value).endswith(report)


def test_a_worker_that_cannot_load_the_model_is_an_interpreter_error(monkeypatch, tmp_path):
    _fake_worker(monkeypatch, tmp_path, """\
        sys.stderr.write("Traceback...\\nValueError: odd model\\n")
        sys.exit(1)
        """)
    from tflm_train.runtime import InterpreterError

    with pytest.raises(InterpreterError, match="could not load the model .ValueError: odd model"):
        memory.smallest_arena(b"model")


# ---- .tflite reader: structure the converter and runtime index blindly ------------------------
def _mutated(model_bytes: bytes, mutate) -> bytes:
    from tflm_train.converter.model_ir import Model

    model = Model.from_bytes(model_bytes)
    mutate(model)
    return model.to_bytes()


def _set_quant(tensor, scales, zero_points):
    tensor.quantization.scale, tensor.quantization.zeroPoint = scales, zero_points


def _weights(model):
    return model.tensors[model.inputs_of(model.operators[0])[1]]


@pytest.mark.parametrize("mutation, message", [
    # Found by the fuzzer: convert died in dequantize (ValueError: operands could not be broadcast).
    (lambda m: setattr(_weights(m).quantization, "zeroPoint", [0] * 16), "16 zero points for"),
    (lambda m: _set_quant(_weights(m), [0.1] * 7, [0] * 7), "7 per-channel scales along dimension 0"),
    (lambda m: _set_quant(_weights(m), [float("nan")] * 32, [0] * 32), "scale that is not finite"),
    # Found by the fuzzer: predict died reshaping a sample into (0, 64).
    (lambda m: setattr(m.tensors[m.main.inputs[0]], "shape", np.asarray([0, 64], np.int32)), "a dimension of 0"),
    (lambda m: setattr(m.tensors[m.main.inputs[0]], "shape", np.asarray([1, -64], np.int32)), "negative dimension"),
])
def test_corrupt_tensor_metadata_is_a_model_error(digits, mutation, message):
    from tflm_train.converter import ConvertConfig, convert

    broken = _mutated(digits.int8_model, mutation)
    with pytest.raises(ModelError, match=message):
        convert(broken, ConvertConfig(method="lora"))


@pytest.mark.parametrize("case, message", [
    ("original-conv-sigfpe", r"crashes \(SIGFPE\) on this model"),
    # crashed stock MEAN only sometimes (its axes constant marked variable: TFLM
    # ignores a variable's data); refused since when the model is read
    ("original-mean-segv", r"is marked variable but holds constant data"),
])
def test_check_prepares_refuses_a_model_a_stock_kernel_crashes_on(case, message):
    """Fuzz findings: mutated originals that prepare, convert, and then crash a
    stock TFLM kernel (CONV_2D, MEAN) on the first Invoke; the converted model
    keeps those operators, so the guard invokes the original once."""
    from pathlib import Path

    broken = (Path(__file__).parent / "regressions" / f"{case}.bin").read_bytes()
    with pytest.raises(ModelError, match=message):
        memory.check_prepares(broken)


def test_a_sanitized_crash_in_the_wheel_is_still_too_small():
    """Under ASan the planner's segfault arrives as an ASan SEGV report; only
    one whose top frame is in our plugin is a finding."""
    planner = ("==7==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000010\n"
               "    #0 0x7f in tflite::GreedyMemoryPlanner::CalculateOffsetsIfNeeded() (_runtime.so+0x1)\n")
    ours = planner.replace("(_runtime.so+0x1)", "(/x/build/asan/libtflm_train_ops.so+0x2)")
    overflow = "==7==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x1\n    #0 0x7f in f (_runtime.so+0x1)\n"
    assert memory.sanitizer_line(planner) is None
    assert memory.sanitizer_line(ours).endswith("SEGV on unknown address 0x000000000010")
    assert memory.sanitizer_line(overflow).endswith("heap-buffer-overflow on address 0x1")
    assert memory.sanitizer_line("Segmentation fault") is None


def test_check_prepares_refuses_a_model_the_wheel_wrapper_raises_on():
    """Fuzz finding: an opcode changed in hey_jarvis makes the wheel's Python
    wrapper raise AttributeError; in the guard's worker that is a refusal."""
    from pathlib import Path

    broken = (Path(__file__).parent / "regressions" / "runtime-wheel-attribute-error.bin").read_bytes()
    with pytest.raises(ModelError, match=r"cannot (load|run) this model: .*sharedName") as caught:
        memory.check_prepares(broken)
    assert "\n" not in str(caught.value)


# ---- corrupt converted models that crash stock TFLM kernels -----------------------------------
@pytest.mark.parametrize("case", ["tflm-mean-prepare-segv", "tflm-conv-eval-sigfpe"])
def test_fit_and_evaluate_refuse_a_model_that_crashes_stock_kernels(case, tmp_path, capsys):
    """Stock MEAN / CONV_2D crash on these corrupt converted models (TFLM is not
    ours to patch): the CLI runs the model once in a guarded child first, so the
    user gets one line and exit 2, never a SIGSEGV / SIGFPE."""
    from pathlib import Path

    model = tmp_path / "broken.tflite"
    model.write_bytes((Path(__file__).parent / "regressions" / f"{case}.bin").read_bytes())
    data = Path(__file__).resolve().parents[2] / "tflm_train" / "examples" / "basic_motions" / "user_test.npz"
    for command in (["evaluate", str(model), "--data", str(data)],
                    ["fit", str(model), "--data", str(data), "--epochs", "1"]):
        code, err = _run_cli(capsys, *command)
        assert code == 2 and err.count("\n") == 1 and "the TFLM interpreter" in err, (command, err)
