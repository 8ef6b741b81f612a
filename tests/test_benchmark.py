"""The benchmark command's contract (its columns and targets), not its timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The benchmark builds its models with Keras (tests/cnn_models.py) and takes minutes.
pytestmark = [pytest.mark.tf, pytest.mark.slow]


def test_benchmark_reports_every_column_and_target():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--models", "tiny_conv", "--methods", "lora,head",
         "--repeats", "2", "--no-tf", "--json", "--step-blocks", "3", "--step-block-steps", "50"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [(r["model"], r["method"]) for r in report["rows"]] == [("tiny_conv", "lora"), ("tiny_conv", "head")]
    for row in report["rows"]:
        assert row["inference_ms"] > 0 and row["train_ms"] > 0
        assert row["arena_training"] > row["arena_inference"] > 0
        assert row["arena_over_live_peak"] >= 1.0  # the measured arena holds at least the live bytes
    assert len(report["kernels"]) == 3
    assert all({"target", "value", "limit", "met"} <= t.keys() for t in report["targets"])
    # Per-step split of the digits MLP (issue 17 item 5): every part measured by
    # the plugin's kernel timer; LoRA trains 296 parameters, sparse all 2,778.
    steps = {s["name"]: s for s in report["steps"]}
    assert set(steps) == {"lora", "sparse (all weights)"}
    assert steps["lora"]["trainable_params"] == 296 and steps["sparse (all weights)"]["trainable_params"] == 2778
    for step in steps.values():
        assert step["forward_us"] > 0 and step["backward_us"] > 0 and step["optimizer_us"] > 0
        assert step["bookkeeping_us"] > 0 and step["inference_us"] > 0
        assert 0 < step["bookkeeping_share"] < 1
    # More parameters to update: the optimizer's share grows.
    assert steps["sparse (all weights)"]["optimizer_us"] > steps["lora"]["optimizer_us"]
    targets = {t["target"] for t in report["targets"]}
    assert "digits LoRA: state bookkeeping <= 5% of a step" in targets
    integer = report["float_vs_int"]
    assert integer["available"] or integer["note"] == "n/a (no --arithmetic int8 in this build)"
    assert report["mobilenet"] == []  # heavy rows only with --mobilenet


def test_benchmark_tensorflow_columns_measure_the_same_step():
    """The TensorFlow side runs (no silent NaN) for a method other than LoRA."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--models", "tiny_conv", "--methods", "bias",
         "--repeats", "3", "--json"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout)["rows"]
    assert "tf_eager_error" not in row and "tf_function_error" not in row, row
    assert row["tf_eager_ms"] > 0 and row["tf_function_ms"] > 0
    assert row["tf_eager_peak_mb"] >= 0 and row["tf_function_peak_mb"] >= 0
