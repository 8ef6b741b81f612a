"""Sparse update by contribution (issue 17 item 4): which layers' biases and
weights train within a measured arena budget, ranked by trial fine-tunes on
the user's data. Runs on the digits MLP (checked in; no TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tflm_train.cli import cli
from tflm_train.converter import ConversionError, ConvertConfig, convert
from tflm_train.memory import smallest_arena
from tflm_train.sparse import choose_sparse
from tflm_train.trainer import PlainModel, TrainableModel

DIGITS = Path(__file__).resolve().parents[1] / "tflm_train" / "examples" / "digits"


@pytest.fixture(scope="module")
def digits() -> bytes:
    return (DIGITS / "model_int8.tflite").read_bytes()


@pytest.fixture(scope="module")
def user_data():
    data = np.load(DIGITS / "user_train.npz")
    return data["x"].astype(np.float32), data["y"]


def test_only_the_named_biases_train(digits, user_data):
    x, _ = user_data
    result = convert(digits, ConvertConfig(method="sparse", targets="0,2", sparse_biases="2", sparse_weights="0"))
    roles = {(t["layer"].split("/")[-1], t["role"]) for t in result.metadata["state"]["tensors"]}
    assert roles == {("dense_1_1", "weight"), ("logits_1", "bias")}
    # The frozen bias of the weight-training layer is kept (dequantized), so
    # the first prediction is the original's.
    np.testing.assert_array_equal(TrainableModel(result.model).predict(x[0]), PlainModel(digits).predict(x[0]))
    with pytest.raises(ConversionError, match="trains neither its bias nor its weights"):
        convert(digits, ConvertConfig(method="sparse", targets="1,2", sparse_biases="2"))


def test_budget_choice_by_contribution_fits_and_helps(digits, user_data):
    every_bias = smallest_arena(convert(digits, ConvertConfig(method="sparse")).model)
    budget = 12_000
    lines: list[str] = []
    choice = choose_sparse(digits, ConvertConfig(method="sparse"), budget, on_try=lines.append, data=user_data)
    assert choice.ranking == "contribution"
    assert choice.arena_bytes <= budget and smallest_arena(choice.result.model) == choice.arena_bytes
    assert "sequential_1/logits_1" in choice.bias_layers  # the last layer's bias, always
    chosen = [p for p in choice.parts if p.chosen]
    assert chosen and all(p.gain is not None and p.gain > 0 for p in chosen)
    # At most one weight part (whole, or some channels) per layer.
    weight_parts = [p.index for p in chosen if p.kind != "bias"]
    assert len(weight_parts) == len(set(weight_parts))
    # Fractions of a layer's channels were measured, with their own arenas.
    fractions = [p for p in choice.parts if p.kind == "channels"]
    assert fractions and all(0 < len(p.channels) < p.out_channels for p in fractions)
    wholes = {p.index: p.arena_bytes or budget + 1 for p in choice.parts if p.kind == "weights"}
    measured = [p for p in fractions if p.arena_bytes is not None]
    assert measured and all(p.arena_bytes < wholes[p.index] for p in measured)
    # A part over the budget on its own is never chosen.
    assert all(not p.chosen for p in choice.parts if p.arena_bytes is None)
    assert all(p.arena_bytes <= budget for p in choice.parts if p.arena_bytes is not None)
    assert choice.loss_after < choice.loss_before  # the choice's own trial helps on held-out data
    assert any("held-out loss gain" in line for line in lines)
    assert every_bias < budget  # (here every bias fits; the DS-CNN case is in test_memory.py)


def test_budget_below_the_last_bias_is_refused(digits):
    base = smallest_arena(convert(digits, ConvertConfig(method="sparse", targets="last:1")).model)
    with pytest.raises(ConversionError, match=f"needs a {base:,}-byte arena"):
        choose_sparse(digits, ConvertConfig(method="sparse"), base - 16)


def test_cli_prints_the_choice_and_its_arena(tmp_path):
    out = tmp_path / "sparse.tflite"
    args = ["convert", str(DIGITS / "model_int8.tflite"), "-o", str(out), "--method", "sparse",
            "--budget-bytes", "6000", "--data", str(DIGITS / "user_train.npz")]
    done = CliRunner().invoke(cli, args + ["--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["arena_bytes_training"] <= 6000
    assert "sequential_1/logits_1" in report["bias_layers"]
    assert report["sparse_choice"]["ranking"] == "contribution"
    assert {p["part"] for p in report["sparse_choice"]["parts"]} <= {"bias", "weights", "channels"}
    assert "channel_layers" in report["sparse_choice"]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert "sparse choice, by held-out loss gain per byte" in text.output
    assert "measured training arena" in text.output
    refused = subprocess.run([sys.executable, "-m", "tflm_train.cli", "convert", str(DIGITS / "model_int8.tflite"),
                              "-o", str(tmp_path / "x.tflite"), "--method", "sparse",
                              "--data", str(DIGITS / "user_train.npz")], capture_output=True, text=True)
    assert refused.returncode == 2 and "--data ranks a sparse update" in refused.stderr + refused.stdout
    assert not (tmp_path / "x.tflite").exists()
    both = subprocess.run([sys.executable, "-m", "tflm_train.cli", "convert", str(DIGITS / "model_int8.tflite"),
                           "-o", str(tmp_path / "y.tflite"), "--method", "sparse", "--budget-bytes", "9000",
                           "--sparse-weights", "last:1"], capture_output=True, text=True)
    assert both.returncode == 2 and "name the parts by hand" in both.stderr + both.stdout
    assert not (tmp_path / "y.tflite").exists()


@pytest.mark.tf
def test_some_biases_and_some_weights_train_like_tensorflow(user_data):
    """Weights of the first layer (its bias frozen, kept in float), the bias
    of the last, the middle layer frozen: 10 SGD steps match TensorFlow's."""
    import tensorflow as tf

    import tf_reference
    from graphs import relative_error
    from tflm_train.converter.state_format import Header, parameters

    base = (DIGITS / "model_float.tflite").read_bytes()
    result = convert(base, ConvertConfig(method="sparse", targets="0,2", sparse_biases="2", sparse_weights="0"))
    model = TrainableModel(result.model)
    initial = model.save_state()
    reference = tf_reference.ConvertedModel(base, result.metadata, parameters(initial, Header.unpack(initial)))
    xs, ys = user_data[0][:10], user_data[1][:10]
    for x, y in zip(xs, ys):
        model.train_step(x, int(y), 0.05)
    reference.train(xs, ys, tf.keras.optimizers.SGD(0.05))
    state = model.save_state()
    trained = parameters(state, Header.unpack(state))
    assert relative_error(trained, parameters(initial, Header.unpack(initial))) > 1e-3  # it moved
    assert relative_error(trained, reference.flat()) < 1e-4
