"""`benchmarks/run.py --steps-only`: the per-step split and the float vs
integer LoRA step (issue 17), per operator, with the 1.5x target - its
contract, not its timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_steps_only_reports_float_and_integer_steps_per_op():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--steps-only", "--json", "--step-blocks", "2",
         "--step-block-steps", "20"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert {s["name"] for s in report["steps"]} == {"lora", "sparse (all weights)"}
    integer = report["float_vs_int"]
    assert integer["available"]
    assert integer["int8_over_float"] == integer["int8_step_us"] / integer["float_step_us"] > 0
    floats, ints = integer["float_by_op_us"], integer["int8_by_op_us"]
    # The same model trained both ways: float kernels on one side, integer ones on the other.
    assert {"TFLMT_FULLY_CONNECTED_GRAD", "TFLMT_OPTIMIZER"} <= floats.keys()
    assert {"TFLMT_FULLY_CONNECTED_INT", "TFLMT_FULLY_CONNECTED_INT_GRAD", "TFLMT_LOSS_INT", "TFLMT_SGD_INT"} <= ints.keys()
    assert not any(op.endswith("_INT") or "_INT_" in op for op in floats)
    assert all(us > 0 for us in ints.values())
    assert 0 < integer["int8_kernels_us"] <= integer["int8_step_us"]


def test_steps_only_prints_the_integer_target():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--steps-only", "--step-blocks", "2",
         "--step-block-steps", "20"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "int8  per op (us):" in done.stdout and "TFLMT_FULLY_CONNECTED_INT_GRAD" in done.stdout
    assert "digits LoRA: integer step <= 1.5 x float step" in done.stdout
