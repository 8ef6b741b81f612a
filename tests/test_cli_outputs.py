"""Output files are written after all the work, all or none; --json is strict."""

from __future__ import annotations

import json
import math

from test_cli import EXAMPLE, MODEL, TRAIN, assert_user_error, run

from tflm_train.outputs import finite_or_none, strict_json

UNWRITABLE = "/proc/tflm-train-cannot-write-here/out"  # no such directory, even for root


def _strict(text: str) -> dict:
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_convert_with_an_unwritable_c_array_writes_no_model(tmp_path):
    out = tmp_path / "train.tflite"
    done = run("convert", MODEL, "-o", str(out), "--c-array", UNWRITABLE + ".h")
    assert_user_error(done, "cannot write", UNWRITABLE)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_fit_with_an_unwritable_plot_writes_no_state(tmp_path):
    converted = tmp_path / "train.tflite"
    assert run("convert", MODEL, "-o", str(converted)).returncode == 0
    state = tmp_path / "user.state"
    done = run("fit", str(converted), "--data", TRAIN, "--epochs", "1", "--state-out", str(state),
               "--plot", UNWRITABLE + ".png")
    assert_user_error(done, "cannot write", UNWRITABLE)
    assert not state.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.tflite"]


def test_merge_to_an_unwritable_path_is_one_line(tmp_path):
    converted = tmp_path / "train.tflite"
    assert run("convert", MODEL, "-o", str(converted)).returncode == 0
    state = tmp_path / "s.state"
    assert run("fit", str(converted), "--data", TRAIN, "--epochs", "1", "--state-out", str(state)).returncode == 0
    assert_user_error(run("merge", str(converted), "--state", str(state), "-o", str(tmp_path)), "cannot write")


def test_fit_json_is_strict_when_the_loss_diverges(tmp_path):
    converted = tmp_path / "train.tflite"
    assert run("convert", str(EXAMPLE / "model_float.tflite"), "-o", str(converted)).returncode == 0
    done = run("fit", str(converted), "--data", TRAIN, "--epochs", "1", "--lr", "1e30", "--json")
    assert done.returncode == 0, done.stderr
    payload = _strict(done.stdout)
    for key in ("loss_first", "loss_last", "metric_before", "metric_after"):
        assert payload[key] is None or math.isfinite(payload[key]), (key, payload[key])
    assert payload["steps"] == 64


def test_strict_json_turns_non_finite_numbers_into_null():
    import numpy as np

    payload = {"a": float("nan"), "b": [1.5, float("-inf"), np.float32("inf"), np.int64(3)], "c": {"d": np.nan}}
    assert _strict(strict_json(payload)) == {"a": None, "b": [1.5, None, None, 3], "c": {"d": None}}
    assert finite_or_none((1, 2.0, "x")) == [1, 2.0, "x"]
