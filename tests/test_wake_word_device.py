"""The device side of "the wake word was missed, the user repeats it":
tflmt::FeatureRing and tflmt::RepeatLabels (tflm_ops/device/wake_word_buffer.cc)
compiled for the host under ASan/UBSan and compared with a Python model of the
same ring and labelling; the source compiled for Cortex-M4 with no heap, no
exceptions and no mutable globals. tflmt::LearnRepeat (wake_word_trainer.cc)
needs TFLM: with a tflite-micro checkout in TFLM_DIR (CI has none, like
tests/test_device_lifecycle.py) it is compiled for Cortex-M4, and run on the
real MicroInterpreter with hey_jarvis, where its saved state must equal the
same replay through tflm_train's TrainableModel byte for byte."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import deque
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = -1


@pytest.fixture(scope="module")
def ring_harness(tmp_path_factory) -> Path:
    compiler = shutil.which("g++")
    assert compiler, "g++ is needed (the kernel plugin needs it too)"
    binary = tmp_path_factory.mktemp("wake_word") / "ring_harness"
    flags = ["-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=undefined", f"-I{ROOT / 'tflm_ops'}"]
    subprocess.run([compiler, *flags, str(ROOT / "tests/wake_word/ring_harness.cc"),
                    str(ROOT / "tflm_ops/device/wake_word_buffer.cc"), "-o", str(binary)], check=True)
    return binary


def python_ring(stream: np.ndarray, capacity: int) -> tuple[list[np.ndarray], list[int]]:
    """The held invocations, oldest first, and the clock each was pushed at."""
    held = deque(zip(stream, range(len(stream))), maxlen=capacity)
    return [h[0] for h in held], [h[1] for h in held]


def python_labels(stream, capacity, press, release, window_start, window_end, margin, before_press):
    held, clocks = python_ring(stream, capacity)
    labels = np.full(len(held), IGNORE)
    if release <= press or release > len(stream) or press not in clocks or (release - 1) not in clocks:
        return False, -1, labels
    first, last = clocks.index(press), clocks.index(release - 1)
    # C++ integer division truncates toward zero.
    level = [int(np.trunc(h.astype(np.int64).sum() / h.size)) for h in held]
    quietest = min(level[first : last + 1])
    loud = [i for i in range(first, last + 1) if level[i] >= quietest + margin]
    if not loud:
        return False, -1, labels
    end = loud[-1]
    if before_press == 0:
        labels[:first] = 0
    labels[max(0, end + window_start) : min(len(held), end + window_end)] = 1
    return bool((labels == 1).any()), end, labels


def utterance_stream(rng, length: int, word_at: int, word_len: int, bytes_per: int = 120) -> np.ndarray:
    """int8 invocations: quiet noise with one loud stretch (the repeated word)."""
    stream = rng.integers(-128, -100, size=(length, bytes_per))
    stream[word_at : word_at + word_len] = rng.integers(-60, 40, size=(word_len, bytes_per))
    return stream.astype(np.int8)


CASES = [
    # length, capacity, word_at, word_len, press, release, window, margin, before_press
    (60, 100, 20, 15, 15, 45, (2, 14), 20, IGNORE),  # ring not full yet
    (250, 100, 200, 20, 190, 232, (2, 14), 20, IGNORE),  # wrapped around, window past the release
    (250, 100, 200, 20, 190, 232, (2, 14), 20, 0),  # the pre-press span labelled negative
    (250, 100, 230, 18, 225, 250, (2, 14), 20, IGNORE),  # window cut at the newest invocation
    (250, 100, 100, 20, 95, 130, (2, 14), 20, IGNORE),  # press no longer held: refused
    (250, 100, 200, 20, 210, 210, (2, 14), 20, IGNORE),  # empty span: refused
    (250, 100, 200, 20, 190, 232, (0, 3), 500, IGNORE),  # nothing loud enough: refused
    (300, 97, 260, 25, 240, 299, (-3, 5), 10, 0),  # odd capacity, window starting inside the word
]


@pytest.mark.parametrize("length, capacity, word_at, word_len, press, release, window, margin, before_press", CASES)
def test_ring_and_repeat_labels_match_the_python_model(ring_harness, tmp_path, length, capacity, word_at, word_len,
                                                       press, release, window, margin, before_press):
    rng = np.random.default_rng(length + word_at + margin)
    stream = utterance_stream(rng, length, word_at, word_len)
    (tmp_path / "stream.bin").write_bytes(stream.tobytes())
    run = subprocess.run([str(ring_harness), str(tmp_path / "stream.bin"), str(capacity), "120", str(press),
                          str(release), str(window[0]), str(window[1]), str(margin), str(before_press)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()

    held, clocks = python_ring(stream, capacity)
    assert lines[0] == f"count {len(held)}" and lines[1] == f"pushed {length}"
    expected_index = [clocks.index(c) if c in clocks else -1 for c in (press, release - 1)]
    assert lines[2].split()[1:] == [str(i) for i in expected_index]
    device_held = [line.split()[2:] for line in lines if line.startswith("held ")]
    assert device_held == [[str(int(h[0])), str(int(h.astype(np.int64).sum()))] for h in held]

    ok, end, labels = python_labels(stream, capacity, press, release, *window, margin, before_press)
    verdict = next(line for line in lines if line.startswith("labels ")).split()
    assert verdict[1] == ("ok" if ok else "fail")
    assert int(verdict[2]) == end
    assert [int(v) for v in verdict[5:]] == labels.tolist()
    assert int(verdict[3]) == int((labels == 1).sum()) and int(verdict[4]) == int((labels == 0).sum())
    if ok:  # the window follows the loud stretch the stream was built with
        assert clocks[end] == word_at + word_len - 1


def _cortex_m4_object(source: Path, out: Path, extra: list[str] = ()) -> str:
    compiler = shutil.which("arm-none-eabi-g++")
    if compiler is None:
        if os.environ.get("TFLMT_REQUIRE_CORTEX_M4") == "1":
            pytest.fail("arm-none-eabi-g++ is required here (apt-get install gcc-arm-none-eabi)")
        pytest.skip("arm-none-eabi-g++ is not installed")
    subprocess.run([compiler, "-std=c++17", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                    "-Os", "-ffunction-sections", "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-fno-rtti",
                    "-c", str(source), f"-I{ROOT / 'tflm_ops'}", *extra, "-o", str(out)],
                   check=True, capture_output=True)
    return subprocess.run(["arm-none-eabi-nm", str(out)], capture_output=True, text=True, check=True).stdout


def _assert_device_clean(symbols: str) -> None:
    for forbidden in ("malloc", "_Znw", "_Zna", "__cxa_throw", " free", "__cxa_guard"):
        assert forbidden not in symbols, forbidden
    assert not re.search(r" [BbDd] ", symbols), "no mutable globals"


def test_ring_source_is_device_code_for_cortex_m4(tmp_path):
    symbols = _cortex_m4_object(ROOT / "tflm_ops/device/wake_word_buffer.cc", tmp_path / "ring.o")
    assert "FeatureRing4Push" in symbols and "RepeatLabels" in symbols
    _assert_device_clean(symbols)


@pytest.mark.skipif(not os.environ.get("TFLM_DIR"), reason="set TFLM_DIR to a tflite-micro checkout")
def test_learn_repeat_compiles_for_cortex_m4_against_tflm(tmp_path):
    from tflm_train.device_run import third_party_includes

    tflm = Path(os.environ["TFLM_DIR"])
    extra = ["-DTF_LITE_STATIC_MEMORY", f"-isystem{tflm}", *(f"-isystem{d}" for d in third_party_includes(tflm))]
    symbols = _cortex_m4_object(ROOT / "tflm_ops/device/wake_word_trainer.cc", tmp_path / "learn.o", extra)
    assert "LearnRepeat" in symbols
    _assert_device_clean(symbols)


# ---- LearnRepeat on the real TFLM interpreter (TFLM_DIR) ---------------------------------------
@pytest.fixture(scope="module")
def learn_repeat_binary(tmp_path_factory) -> Path:
    from host_tflm import link_host_program

    return link_host_program(ROOT / "tests/wake_word/learn_repeat_main.cc", tmp_path_factory.mktemp("learn_repeat") / "learn_repeat")


@pytest.mark.slow  # compiles TFLM once (cached)
@pytest.mark.wakeword
@pytest.mark.skipif(not os.environ.get("TFLM_DIR"), reason="set TFLM_DIR to a tflite-micro checkout")
def test_learn_repeat_on_tflm_matches_the_host_replay(learn_repeat_binary, tmp_path):
    import importlib.resources

    from tflm_train.converter import ConvertConfig, convert

    from tflm_train.trainer import TrainableModel, dequantize, quantize

    base = (importlib.resources.files("pymicro_wakeword") / "models" / "hey_jarvis.tflite").read_bytes()
    converted = convert(base, ConvertConfig(method="lora", targets="last:3", r=4)).model
    (tmp_path / "model.tflite").write_bytes(converted)
    stream = utterance_stream(np.random.default_rng(0), 150, 110, 20)
    (tmp_path / "stream.bin").write_bytes(stream.tobytes())
    capacity, press, release, epochs, lr, positive_weight, before_press = 100, 105, 140, 2, 0.01, 3.0, 0
    run = subprocess.run([str(learn_repeat_binary), str(tmp_path / "model.tflite"), str(tmp_path / "stream.bin"),
                          *map(str, [capacity, press, release, epochs, lr, positive_weight, before_press])],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    result = next(line for line in run.stdout.splitlines() if line.startswith("result ")).split()

    # The same on the host: every invocation inferred live, then the replay.
    model = TrainableModel(converted)
    xs = [dequantize(s.reshape(3, 40), model.input_details) for s in stream]
    assert all((quantize(x, model.input_details) == s.reshape(3, 40)).all() for x, s in zip(xs, stream))
    for x in xs:
        model.predict(x)
    ok, _, labels = python_labels(stream, capacity, press, release, 2, 14, 20, before_press)
    assert ok
    positive_losses = []
    for _ in range(epochs):
        for x, label in zip(xs[-capacity:], labels):
            if label == IGNORE:
                model.predict(x)
                continue
            weight = np.float32(positive_weight if label == 1 else 1.0)
            loss = model.train_step(x, np.array([float(label)], np.float32), float(np.float32(lr) * weight))
            if label == 1:
                positive_losses.append(loss)
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    assert result[1:6] == ["0", str(positives), str(negatives), str(epochs * (positives + negatives)),
                           str(epochs * int((labels == IGNORE).sum()))]
    np.testing.assert_allclose([float(result[6]), float(result[7])],
                               [np.mean(positive_losses[:positives]), np.mean(positive_losses[-positives:])],
                               rtol=1e-5)
    assert float(result[7]) < float(result[6])  # the repeat was learned
    assert (tmp_path / "model.tflite.state").read_bytes() == model.save_state()
