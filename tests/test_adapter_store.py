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


def test_host_reads_the_device_store(power_cut_test, digits, tmp_path):
    """tflm_train/adapter_store.py reads what the C++ store wrote: the current
    adapter is the last commit, byte for byte; with its COMMIT marker torn,
    the previous one."""
    from tflm_train.adapter_store import current_adapter
    from tflm_train.converter.state_format import Header

    state = _exported_state(digits.int8_model, digits.user_train, "sgd")
    (tmp_path / "a.state").write_bytes(state)
    run = subprocess.run([str(power_cut_test), "--image", str(tmp_path / "flash.bin"), str(tmp_path / "a.state")],
                         capture_output=True, text=True, check=True)
    slot_bytes, sequence, slot = (int(v) for v in re.search(r"slot_bytes (\d+) sequence (\d+) slot (\d+)",
                                                            run.stdout).groups())
    image = bytearray((tmp_path / "flash.bin").read_bytes())
    header = Header.unpack(state)
    stored = current_adapter(bytes(image), slot_bytes, header.base_model_hash, header.layout_hash)
    assert stored is not None and (stored.sequence, stored.slot, stored.state) == (sequence, slot, state) == (2, 1, state)
    assert current_adapter(bytes(image), slot_bytes, header.base_model_hash ^ 1, header.layout_hash) is None
    image[slot * slot_bytes + 47] = 0xFF  # the last byte of the COMMIT marker never programmed
    older = current_adapter(bytes(image), slot_bytes, header.base_model_hash, header.layout_hash)
    assert older is not None and older.sequence == 1 and older.state[:-1] == state[:-1] != older.state


@pytest.mark.fleet
def test_fleet_log_reads_a_flash_dump(power_cut_test, digits, tmp_path, capsys):
    import json

    from tflm_train.cli import main

    converted = convert(digits.int8_model, ConvertConfig(method="lora", targets="last:2")).model
    (tmp_path / "train.tflite").write_bytes(converted)
    model = TrainableModel(converted)
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.02)
    (tmp_path / "a.state").write_bytes(model.save_state())
    run = subprocess.run([str(power_cut_test), "--image", str(tmp_path / "flash.bin"), str(tmp_path / "a.state")],
                         capture_output=True, text=True, check=True)
    slot_bytes = re.search(r"slot_bytes (\d+)", run.stdout).group(1)
    assert main(["fleet", "log", "dev-9", "--model", str(tmp_path / "train.tflite"), "--flash",
                 str(tmp_path / "flash.bin"), "--slot-bytes", slot_bytes, "--fleet", str(tmp_path / "fleet"),
                 "--json"]) == 0
    logged = json.loads(capsys.readouterr().out)
    assert logged["store_sequence"] == "2" and logged["counters"]["optimizer_steps"] == 1
