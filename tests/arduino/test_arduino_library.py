"""The Arduino library (arduino/): generated from tflm_ops/, its sketches compile
for Cortex-M4 with our Arduino API shim and -Werror, and, with a TFLM tree
(TFLM_DIR), link for Cortex-M4 and run on the host reproducing the host's losses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = ROOT / "tflm_ops/cmake/cortex-m4.cmake"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("arduino")
    subprocess.run([sys.executable, str(ROOT / "arduino/generate.py"), "--out", str(out)], check=True,
                   capture_output=True, cwd=ROOT)
    return out / "TflmTrain"


def _require_arm_gcc() -> None:
    if shutil.which("arm-none-eabi-g++") is None:
        if os.environ.get("TFLMT_REQUIRE_CORTEX_M4") == "1":
            pytest.fail("arm-none-eabi-g++ is required here (apt-get install gcc-arm-none-eabi)")
        pytest.skip("arm-none-eabi-g++ is not installed (apt-get install gcc-arm-none-eabi)")


def _tflm_args() -> list[str]:
    tflm = os.environ.get("TFLM_DIR")
    if not tflm:
        pytest.skip("TFLM_DIR (a tflite-micro checkout) is not set")
    extra = os.environ.get("TFLMT_EXTRA_INCLUDE_DIRS", "")
    if not extra:
        deps = Path(tflm).parent  # checkouts side by side: flatbuffers, gemmlowp, ruy
        extra = ";".join(str(p) for p in (deps / "flatbuffers/include", deps / "gemmlowp", deps / "ruy") if p.exists())
    return [f"-DTFLM_DIR={tflm}", f"-DTFLMT_EXTRA_INCLUDE_DIRS={extra}"]


def _build_dir(tmp_path: Path, name: str) -> Path:
    """TFLMT_ARDUINO_BUILD_DIR keeps TFLM's objects between runs (it takes a while to build)."""
    keep = os.environ.get("TFLMT_ARDUINO_BUILD_DIR")
    return Path(keep) / name if keep else tmp_path / name


def _build(library: Path, build: Path, *args: str) -> None:
    configure = subprocess.run(["cmake", "-S", str(ROOT / "arduino"), "-B", str(build),
                                f"-DTFLMT_ARDUINO_LIBRARY={library}", *args], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stderr
    result = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_library_is_generated_from_tflm_ops_by_directory(library):
    src = library / "src"
    ops = ROOT / "tflm_ops"
    # Every kernel, reference header and device/port file is there (renamed .cpp).
    for pattern in ("kernels/*.cc", "kernels/*.h", "reference/*.h", "device/*", "port/tflm/*"):
        for path in ops.glob(pattern):
            relative = path.relative_to(ops)
            copied = src / "tflm_train" / (relative.with_suffix(".cpp") if path.suffix == ".cc" else relative)
            assert copied.is_file(), f"{relative} was not copied"
    assert not (src / "tflm_train/port/wheel").exists()
    assert not list(src.rglob("*.cc")), "Arduino's builder compiles only .c/.cpp/.S"
    # Includes resolve relative to src/ (what Arduino puts on the include path),
    # except TFLM's own, which come from the TFLM library.
    for path in src.rglob("*"):
        if path.suffix not in (".h", ".cpp"):
            continue
        for name in INCLUDE.findall(path.read_text()):
            if name.startswith("tensorflow/"):
                continue
            assert (src / name).is_file() or (path.parent / name).is_file(), f"{path.name}: {name}"
    properties = dict(line.split("=", 1) for line in (library / "library.properties").read_text().splitlines() if "=" in line)
    assert properties["name"] == "TflmTrain"
    assert properties["depends"] == "Chirale_TensorFLowLite"


def test_self_test_data_holds_the_host_losses(library):
    header = (library / "examples/SelfTest/self_test_data.h").read_text()
    samples = np.load(ROOT / "tflm_train/examples/digits/user_train.npz")["x"]
    epochs = int(re.search(r"kEpochs = (\d+);", header).group(1))
    losses = re.search(r"kHostLossBits\[(\d+)\] = \{([^}]*)\}", header)
    assert int(losses.group(1)) == epochs * len(samples)
    values = np.array([int(v.strip().rstrip("u"), 16) for v in losses.group(2).split(",") if v.strip()], np.uint32)
    values = values.view(np.float32)
    assert len(values) == epochs * len(samples) and np.all(np.isfinite(values)) and np.all(values > 0)
    # Training works: the second epoch's mean loss is below the first's.
    assert values[len(samples):].mean() < values[: len(samples)].mean()


def test_sketches_compile_for_cortex_m4_without_tflm(library, tmp_path):
    """CI's check: the sketches and the TFLM-free part of the library compile
    with -Werror against our shim; sketches need no TFLM header."""
    _require_arm_gcc()
    build = tmp_path / "m4"
    _build(library, build, "--toolchain", str(TOOLCHAIN))
    for sketch in ("SelfTest", "MotionPersonalize"):
        objects = list(build.glob(f"CMakeFiles/sketch_{sketch}.dir/*.o*"))
        assert objects, sketch
        header = subprocess.run(["arm-none-eabi-readelf", "-h", str(objects[0])], capture_output=True, text=True).stdout
        assert "ARM" in header
    assert (build / "libtflmt_arduino_core.a").is_file()


def test_sketches_link_for_cortex_m4_with_tflm(library, tmp_path):
    _require_arm_gcc()
    args = _tflm_args()
    build = _build_dir(tmp_path, "m4-tflm")
    _build(library, build, "--toolchain", str(TOOLCHAIN), *args)
    for sketch in ("SelfTest", "MotionPersonalize"):
        elf = build / sketch
        sizes = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True).stdout
        text, data, bss = (int(v) for v in sizes.splitlines()[1].split()[:3])
        print(f"{sketch} on Cortex-M4: flash {text + data} B, RAM {data + bss} B")
        assert text > 100_000 and bss > 16 * 1024  # TFLM + model linked; the arena is static


def _host_build(library: Path, tmp_path: Path) -> Path:
    build = _build_dir(tmp_path, "host-tflm")
    _build(library, build, *_tflm_args())
    return build


def test_self_test_sketch_matches_the_host_on_x86(library, tmp_path):
    """The sketch, run on x86 with the shim, gives the Python run's losses bit for bit."""
    build = _host_build(library, tmp_path)
    run = subprocess.run([str(build / "SelfTest")], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    steps = [line for line in run.stdout.splitlines() if line.startswith("step ")]
    assert len(steps) == 128
    assert all(line.endswith(" match") for line in steps), [s for s in steps if not s.endswith(" match")][:5]
    assert "SelfTest: PASS" in run.stdout


def test_motion_sketch_trains_and_keeps_the_adapter_across_resets(library, tmp_path):
    build = _host_build(library, tmp_path)
    sketch = str(build / "MotionPersonalize")
    first = subprocess.run([sketch], input="dt", capture_output=True, text=True, timeout=600, cwd=tmp_path).stdout
    assert "no saved adapter: base model" in first
    accuracies = [int(m) for m in re.findall(r"accuracy on the recorded windows: (\d+)/12", first)]
    assert len(accuracies) == 2 and accuracies[1] > accuracies[0], first
    assert "adapter saved" in first
    # A "reset": a new run restores the adapter from storage and keeps its accuracy.
    second = subprocess.run([sketch], input="da", capture_output=True, text=True, timeout=600, cwd=tmp_path).stdout
    assert "saved adapter restored" in second
    assert re.search(r"accuracy on the recorded windows: (\d+)/12", second).group(1) == str(accuracies[1])
    # A damaged record is refused by the storage's CRC: back to the base model.
    state = tmp_path / "tflmt_adapter.bin"
    blob = bytearray(state.read_bytes())
    blob[100] ^= 0xFF
    state.write_bytes(bytes(blob))
    third = subprocess.run([sketch], input="da", capture_output=True, text=True, timeout=600, cwd=tmp_path).stdout
    assert "no saved adapter: base model" in third
    assert re.search(r"accuracy on the recorded windows: (\d+)/12", third).group(1) == str(accuracies[0])
