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
         "--repeats", "2", "--no-tf", "--json"],
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
