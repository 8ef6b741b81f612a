"""The flash adapter store (tflm_ops/device/adapter_store.{h,cc}) survives a
power cut at every byte programmed and every page erased during a commit or
a rollback: after each simulated reboot it opens, and yields exactly the old or
exactly the new adapter (tests/store/power_cut_test.cc, built here with the
host g++ under AddressSanitizer + UBSan). The adapters are real exported
training states of the digits example, plus a synthetic one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.trainer import TrainableModel

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # ~60 000 cut points under ASan: ~1-2 min


@pytest.fixture(scope="module")
def power_cut_test(tmp_path_factory) -> Path:
    compiler = shutil.which("g++")
    assert compiler, "g++ is needed to build the store's host test"
    binary = tmp_path_factory.mktemp("store") / "power_cut_test"
    sources = [ROOT / "tests/store/power_cut_test.cc", ROOT / "tflm_ops/device/adapter_store.cc"]
    flags = ["-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=undefined", f"-I{ROOT / 'tflm_ops'}"]
    subprocess.run([compiler, *flags, *map(str, sources), "-o", str(binary)], check=True)
    return binary


def _exported_state(model_bytes: bytes, data, optimizer: str) -> bytes:
    converted = convert(model_bytes, ConvertConfig(method="lora", targets="last:2",
                                                   optimizer=OptimizerConfig(kind=optimizer))).model
    model = TrainableModel(converted)
    for i in range(5):
        model.train_step(data.x[i], data.y[i], 0.02)
    return model.save_state()


def test_every_power_cut_yields_old_or_new_adapter(power_cut_test, digits, tmp_path):
    states = []
    for optimizer in ("sgd", "adam"):  # a small and a large state
        path = tmp_path / f"{optimizer}.state"
        path.write_bytes(_exported_state(digits.int8_model, digits.user_train, optimizer))
        states.append(path)
    run = subprocess.run([str(power_cut_test), *map(str, states)], capture_output=True, text=True, timeout=900)
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = re.search(r"header bytes (\d+); cut points tested (\d+); failures (\d+)", run.stdout)
    assert summary and summary.group(3) == "0"
    # Every byte of every commit was a cut point: at least the adapters' bytes,
    # over 4 commits x 2 flash geometries per adapter.
    total_bytes = sum(p.stat().st_size for p in states)
    assert int(summary.group(2)) >= 8 * total_bytes


def test_synthetic_adapter_and_store_checks(power_cut_test):
    run = subprocess.run([str(power_cut_test)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failures 0" in run.stdout
