"""The converted model's checksum (converter/integrity.py, and its device twin
tflm_ops/device/model_check.cc): written by convert and merge, checked before
any interpreter sees a model, so that a damaged converted model is refused in
one line instead of crashing a stock TFLM kernel in-process."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tflm_train.converter import ConvertConfig, convert
from tflm_train.converter.integrity import CHECKSUM_NAME, Checksum, seal, verify
from tflm_train.converter.model_ir import Model, ModelError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tflm_train" / "examples"
REGRESSIONS = Path(__file__).parent / "regressions"


@pytest.fixture(scope="module")
def converted() -> bytes:
    original = (EXAMPLES / "basic_motions" / "model_int8.tflite").read_bytes()
    return convert(original, ConvertConfig(method="lora")).model


def _flipped(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x10
    return bytes(damaged)


def _inside_weights(data: bytes) -> int:
    """An offset in the largest constant buffer: damage that leaves the flatbuffer readable."""
    largest = max((b.data for b in Model.from_bytes(data).raw.buffers if b.data is not None), key=len)
    payload = np.asarray(largest, np.uint8).tobytes()
    return data.index(payload) + len(payload) // 2


def test_convert_and_merge_write_a_checksum_that_matches(converted):
    from tflm_train.converter.merge import merge

    assert verify(converted) is Checksum.OK
    assert Model.from_bytes(converted).metadata(CHECKSUM_NAME) is not None
    assert verify(merge(converted, None)) is Checksum.OK
    original = (EXAMPLES / "digits" / "model_int8.tflite").read_bytes()
    assert verify(original) is Checksum.MISSING


def test_any_changed_byte_is_a_mismatch(converted):
    rng = random.Random(7)
    for at in rng.sample(range(len(converted)), 200):
        assert verify(_flipped(converted, at)) in (Checksum.MISMATCH, Checksum.MALFORMED), at
    assert verify(converted[:-1]) is not Checksum.OK
    assert verify(converted + b"\0") is Checksum.MISMATCH
    assert verify(b"") is Checksum.MALFORMED
    from tflm_train.converter.integrity import refuse_damaged

    with pytest.raises(ModelError, match=r"^corrupt or truncated \.tflite"):
        refuse_damaged(converted[:100])
    assert verify(seal(_flipped(converted, 5000))) is Checksum.OK  # a recomputed CRC passes: damage, not intent


def test_loading_a_damaged_model_is_one_line(converted):
    from tflm_train.runtime import Interpreter
    from tflm_train.trainer import PlainModel, TrainableModel

    damaged = _flipped(converted, _inside_weights(converted))
    for load in (TrainableModel, PlainModel, Interpreter):
        with pytest.raises(ModelError, match=r"^model was modified after conversion .*checksum does not match") as caught:
            load(damaged)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", ["tflm-mean-prepare-segv", "tflm-conv-eval-sigfpe"])
def test_a_model_without_checksum_is_run_in_a_guarded_child_first(case):
    """These corrupt converted models come from a tflm-train without the
    checksum: in-process they kill the process in stock MEAN / CONV_2D (SIGSEGV,
    SIGFPE; see their .txt). TrainableModel runs such a model once in a child
    process first (memory.check_prepares) and refuses it in one line."""
    from tflm_train.trainer import TrainableModel

    broken = (REGRESSIONS / f"{case}.bin").read_bytes()
    assert verify(broken) is Checksum.MISSING
    with pytest.raises(ModelError, match=r"the TFLM interpreter (crashes|cannot)") as caught:
        TrainableModel(broken)
    assert "\n" not in str(caught.value)


def test_a_constant_marked_variable_is_refused_before_any_interpreter():
    """tflm-mean-eval-segv crashed stock MEAN only sometimes: its axes constant
    is marked variable, TFLM ignores a variable's data, and MEAN read whatever
    the arena held (a crash, a spin or a pass). It is refused when read."""
    from tflm_train.trainer import TrainableModel

    broken = (REGRESSIONS / "tflm-mean-eval-segv.bin").read_bytes()
    with pytest.raises(ModelError, match=r"is marked variable but holds constant data") as caught:
        TrainableModel(broken)
    assert "\n" not in str(caught.value)


def test_an_older_converted_model_still_loads(converted):
    """No checksum entry (an older tflm-train): guarded once, then used."""
    from tflm_train.trainer import TrainableModel

    model = Model.from_bytes(converted)
    model.remove_metadata(CHECKSUM_NAME)
    legacy = model.to_bytes()
    assert verify(legacy) is Checksum.MISSING
    trainable = TrainableModel(legacy)
    x = np.zeros(trainable.sample_shape, np.float32)
    assert np.isfinite(trainable.train_step(x, 1, 0.01))


# ---- the device twin: tflm_ops/device/model_check.cc ------------------------------------------
DEVICE_SOURCES = [ROOT / "tflm_ops" / "device" / "model_check.cc"]
_DRIVER = r"""
#include <cstdio>
#include <vector>
#include "device/model_check.h"
int main(int argc, char** argv) {
  const char* names[] = {"ok", "missing", "mismatch", "malformed"};
  for (int i = 1; i < argc; ++i) {
    std::FILE* f = std::fopen(argv[i], "rb");
    std::vector<unsigned char> bytes;
    int c;
    while ((c = std::fgetc(f)) != EOF) bytes.push_back(static_cast<unsigned char>(c));
    std::fclose(f);
    // An exact-size heap copy: ASan sees any read past the end.
    unsigned char* exact = new unsigned char[bytes.size() + 1];
    for (size_t k = 0; k < bytes.size(); ++k) exact[k] = bytes[k];
    std::printf("%s\n", names[static_cast<int>(tflmt::CheckModelIntegrity(exact, bytes.size()))]);
    delete[] exact;
  }
  return 0;
}
"""


def test_the_device_check_agrees_with_the_host_on_damaged_files(converted, tmp_path):
    """Same answer as converter/integrity.py on sealed, damaged, truncated and
    resealed files, built with ASan+UBSan: no read outside the file."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is needed (it is installed in CI)")
    driver = tmp_path / "driver.cc"
    driver.write_text(_DRIVER)
    binary = tmp_path / "model_check"
    subprocess.run([compiler, "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    f"-I{ROOT / 'tflm_ops'}", str(driver), *map(str, DEVICE_SOURCES), "-o", str(binary)], check=True)
    rng = random.Random(11)
    cases = [converted, converted[:-1], converted[:100], b"", b"TFL3", converted + b"\0",
             (EXAMPLES / "digits" / "model_int8.tflite").read_bytes(), seal(_flipped(converted, 3000))]
    for _ in range(300):
        damaged = bytearray(converted)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        cases.append(bytes(damaged[: rng.choice([len(damaged), rng.randrange(len(damaged))])]))
    paths = []
    for i, data in enumerate(cases):
        path = tmp_path / f"case{i}.tflite"
        path.write_bytes(data)
        paths.append(str(path))
    result = subprocess.run([str(binary), *paths], capture_output=True, text=True, check=True)
    device = result.stdout.split()
    host = [verify(data).value for data in cases]
    assert device == host
    assert device[:2] == ["ok", "mismatch"] and device[6:8] == ["missing", "ok"]
    assert {"ok", "mismatch", "malformed", "missing"} <= set(device)


def test_the_device_check_builds_for_cortex_m(tmp_path):
    compiler = shutil.which("arm-none-eabi-g++")
    if compiler is None:
        pytest.fail("arm-none-eabi-g++ is needed (gcc-arm-none-eabi, installed in CI)")
    for source in DEVICE_SOURCES:
        subprocess.run([compiler, "-std=c++17", "-mcpu=cortex-m4", "-mthumb", "-Os", "-fno-exceptions", "-fno-rtti",
                        "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'tflm_ops'}", "-c", str(source),
                        "-o", str(tmp_path / "model_check.o")], check=True)


def test_fit_evaluate_and_merge_refuse_a_damaged_model_in_one_line(converted, tmp_path, capsys):
    from tflm_train.cli import main
    from tflm_train.trainer import TrainableModel

    state = tmp_path / "user.state"
    state.write_bytes(TrainableModel(converted).save_state())
    model = tmp_path / "damaged.tflite"
    model.write_bytes(_flipped(converted, _inside_weights(converted)))
    data = EXAMPLES / "basic_motions" / "user_test.npz"
    for command in (["evaluate", str(model), "--data", str(data)],
                    ["fit", str(model), "--data", str(data), "--epochs", "1"],
                    ["merge", str(model), "--state", str(state), "-o", str(tmp_path / "merged.tflite")]):
        code = main(command)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "modified after conversion" in err, (command, err)
    assert not (tmp_path / "merged.tflite").exists()


def test_a_model_that_never_finishes_is_refused_after_the_timeout(monkeypatch):
    """A stock kernel spinning on a corrupt model (seen once on
    regressions/tflm-mean-hang) must not hang the guarded check."""
    import sys

    from tflm_train import memory

    monkeypatch.setattr(memory, "CHECK_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(memory._Prober, "command", lambda self: [sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(ModelError, match=r"does not finish running this model \(no answer in 1 s\)"):
        memory.check_prepares((EXAMPLES / "digits" / "model_int8.tflite").read_bytes())
