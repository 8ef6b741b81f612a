"""`tflm-train report` and `convert --board`: their contract, not their timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cnn_models
import golden
from tflm_train.boards import BOARDS, board
from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.fitting_board import fit_to_board
from tflm_train.memory import smallest_arena
from tflm_train.memory_report import fits, report


@pytest.fixture(scope="module")
def ds_cnn():
    """DS-CNN-S int8 as cnn_models.ds_cnn_s() builds it (checked in: no TensorFlow needed)."""
    return golden.model("ds_cnn_s_int8")


def run(*args):
    return subprocess.run([sys.executable, "-m", "tflm_train.cli", *args], capture_output=True, text=True, timeout=600)


def test_report_numbers_are_measurements(ds_cnn, tmp_path):
    result = convert(ds_cnn, ConvertConfig(method="lora", targets="last:2", optimizer=OptimizerConfig(kind="adam")))
    measured = report(result.model)
    assert measured.arena_bytes_training == smallest_arena(result.model)
    assert measured.arena_bytes_inference == smallest_arena(ds_cnn)  # the base model, rebuilt
    assert measured.flash_bytes == len(result.model)
    params = result.metadata["state"]["param_count"]
    assert measured.trainable_params == params and measured.optimizer_state_bytes == 8 * params  # Adam: m and v
    assert measured.base_params > 20 * params
    assert sum(measured.breakdown.values()) == measured.arena_bytes_training
    assert measured.breakdown["optimizer state"] == 8 * params


def test_report_cli_json_keys_board_and_plot(ds_cnn, tmp_path):
    model = tmp_path / "train.tflite"
    model.write_bytes(convert(ds_cnn, ConvertConfig()).model)
    plot = tmp_path / "memory.png"
    done = run("report", str(model), "--json", "--board", "nano33ble", "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    for key in ("arena_bytes_inference", "arena_bytes_training", "flash_bytes", "trainable_params",
                "base_params", "optimizer_state_bytes"):
        assert isinstance(payload[key], int)
    assert payload["board"]["fits"] is True
    assert plot.read_bytes()[:4] == b"\x89PNG"
    table = run("report", str(model))
    assert table.returncode == 0 and "activations kept for backward" in table.stdout


@pytest.mark.tf
def test_report_refuses_a_board_that_is_too_small(tmp_path):
    big = cnn_models.mobilenet_v1_025_vww().int8_model
    model = tmp_path / "vww.tflite"
    # Biases of every layer: backprop through the whole 96x96 network.
    model.write_bytes(convert(big, ConvertConfig(method="bias", targets="last:28")).model)
    done = run("report", str(model), "--board", "pico")
    assert done.returncode == 2
    assert "training needs a" in done.stderr and "pico has" in done.stderr
    assert fits(report(model.read_bytes()), board("portenta-h7")) == []


def test_boards_cover_the_issue_list():
    assert {"nano33ble", "portenta-h7", "nicla-vision", "esp32-s3", "pico", "stm32f746-disco", "corstone-300"} <= set(BOARDS)
    assert board("nano33ble").sram_bytes == 256 * 1024 and board("pico").sram_bytes == 264 * 1024


def test_convert_for_a_board_picks_what_fits(ds_cnn, tmp_path):
    tiny = board("nano33ble")
    small = type(tiny)("test-48k", "48 KB test board", 48 * 1024, 1024 * 1024)
    picked = fit_to_board(ds_cnn, ConvertConfig(method="lora"), small)
    assert picked.arena_bytes <= small.sram_bytes
    assert smallest_arena(picked.result.model) == picked.arena_bytes
    # The most capable candidate did not fit this board, so something smaller was picked.
    assert picked.picked != "targets last:3, rank 8"
    out = tmp_path / "board.tflite"
    done = run("convert", "/nonexistent.tflite", "-o", str(out), "--board", "nope")
    assert done.returncode == 2 and not out.exists()
