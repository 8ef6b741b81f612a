"""Full-stack training on Cortex-M4F, M3 and M55 under QEMU against x86.

firmware/trainer (TFLM built from TFLM_DIR + our kernels + a converted model
and samples as C arrays) trains in qemu-system-arm; the same steps run in
the TFLM x86 interpreter; every loss and the final state must be identical.
Needs a tflite-micro checkout in TFLM_DIR (CI has none: it runs the kernel
tests in test_kernel_runner.py instead).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tflm_train import qemu
from tflm_train.converter.config import ConvertConfig
from tflm_train.converter.convert import convert
from tflm_train.converter.ops import OptimizerConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "tflm_train" / "examples"
MODELS = {
    # name: (example, base model, conversion, steps, learning rate)
    "digits_lora_sgd": ("digits", "model_int8", ConvertConfig(), 64, 0.02),
    "basic_motions_lora_adam": ("basic_motions", "model_int8",
                                ConvertConfig(targets="last:3", optimizer=OptimizerConfig(kind="adam")), 12, 0.01),
}

needs_tflm = pytest.mark.skipif(not os.environ.get("TFLM_DIR"),
                                reason="set TFLM_DIR to a tflite-micro checkout to train under QEMU")


@needs_tflm
@pytest.mark.parametrize("core", list(qemu.CORES))
@pytest.mark.parametrize("name", list(MODELS))
def test_training_on_cortex_m_matches_x86(name, core, tmp_path):
    from tflm_train.device_run import device_run, probe_arena

    example, base, config, steps, lr = MODELS[name]
    model = convert((EXAMPLES / example / f"{base}.tflite").read_bytes(), config).model
    result = device_run(model, str(EXAMPLES / example / "user_train.npz"), core, steps, lr, None, tmp_path)
    assert len(result.device.losses) == steps
    assert result.device.arena_used > 0
    assert result.device.infer_instructions > 0 and min(result.device.step_instructions) > 0
    # The bisection's answer allocates, and 16 bytes less does not.
    elf = result.device_elf
    smallest = result.device.smallest_arena
    assert smallest > 0
    assert probe_arena(qemu.CORES[core], elf, tmp_path, smallest)
    assert not probe_arena(qemu.CORES[core], elf, tmp_path, smallest - 16)
    assert not result.differing_losses, f"steps {result.differing_losses} differ"
    assert result.state_identical, f"state max |difference| {result.max_state_difference():.3g}"


def test_device_data_writes_host_trainers_format(tmp_path):
    """`tflm-train device data` writes TMTD: header, float32 inputs, int32 labels."""
    model = tmp_path / "model.tflite"
    model.write_bytes(convert((EXAMPLES / "digits" / "model_int8.tflite").read_bytes(), ConvertConfig()).model)
    out = tmp_path / "data.tmtd"
    run = subprocess.run([sys.executable, "-m", "tflm_train.cli", "device", "data",
                          str(EXAMPLES / "digits" / "user_train.npz"), "--model", str(model), "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    data = np.load(EXAMPLES / "digits" / "user_train.npz")
    blob = out.read_bytes()
    magic, version, n, d, t = struct.unpack("<4s4I", blob[:20])
    assert (magic, version, n, d, t) == (b"TMTD", 1, len(data["x"]), 64, 0)
    x = np.frombuffer(blob[20:20 + 4 * n * d], "<f4").reshape(n, d)
    assert np.array_equal(x, data["x"].reshape(n, d).astype(np.float32))
    assert np.array_equal(np.frombuffer(blob[20 + 4 * n * d:], "<i4"), data["y"])


def test_device_data_refuses_data_of_another_shape(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(convert((EXAMPLES / "digits" / "model_int8.tflite").read_bytes(), ConvertConfig()).model)
    out = tmp_path / "data.tmtd"
    run = subprocess.run([sys.executable, "-m", "tflm_train.cli", "device", "data",
                          str(EXAMPLES / "basic_motions" / "user_train.npz"), "--model", str(model), "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "model input is (64,)" in run.stderr
    assert not out.exists()


def test_device_run_without_tflm_names_tflm_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("TFLM_DIR", raising=False)
    if qemu.missing_tools():
        pytest.skip("cross toolchain or QEMU not installed")
    model = tmp_path / "model.tflite"
    model.write_bytes(convert((EXAMPLES / "digits" / "model_int8.tflite").read_bytes(), ConvertConfig()).model)
    run = subprocess.run([sys.executable, "-m", "tflm_train.cli", "device", "run", str(model), "--data",
                          str(EXAMPLES / "digits" / "user_train.npz")], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "TFLM_DIR"})
    assert run.returncode == 2 and "TFLM_DIR" in run.stderr
