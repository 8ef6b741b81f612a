"""Issue 4: the kernel library inside the real tflite-micro interpreter."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from tflite_micro.python.tflite_micro import runtime as tflm_runtime

import tflm_train
from graphs import Graph
from tflm_train import plugin, selfcheck
from tflm_train._pins import TFLITE_MICRO_VERSION
from tflm_train.converter import ops
from tflm_train.converter.model_ir import Quant
from tflm_train.runtime import Interpreter, InterpreterError, UnsupportedOpError

ROOT = Path(__file__).resolve().parents[1]


def test_one_pinned_tflite_micro_version_everywhere():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("tflite-micro")]
    assert pins == [f"tflite-micro=={TFLITE_MICRO_VERSION}"]
    abi_header = (ROOT / "tflm_ops/port/wheel/wheel_abi.h").read_text()
    assert f'#define TFLMT_WHEEL_VERSION "{TFLITE_MICRO_VERSION}"' in abi_header
    assert plugin.library().tflmt_wheel_version().decode() == TFLITE_MICRO_VERSION
    assert metadata.version("tflite-micro") == TFLITE_MICRO_VERSION


def test_another_tflite_micro_version_is_refused(monkeypatch):
    monkeypatch.setattr(tflm_train._metadata, "version", lambda name: "0.dev20250101000000")
    with pytest.raises(tflm_train.VersionMismatchError, match=f"needs tflite-micro=={re.escape(TFLITE_MICRO_VERSION)}"):
        tflm_train._check_tflite_micro()


def test_converter_and_plugin_name_the_same_ops():
    assert list(ops.ALL_OPS) == plugin.op_names()
    header = (ROOT / "tflm_ops/kernels/constants.h").read_text()
    assert sorted(re.findall(r'OpName\[\] = "(\w+)"', header)) == sorted(ops.ALL_OPS)


def test_selfcheck_runs_a_gradient_kernel_inside_the_interpreter():
    result = selfcheck.run()
    assert result["ok"] and result["max_relative_error"] < 1e-5


@pytest.mark.parametrize("per_channel", [False, True])
def test_fully_connected_input_grad_matches_numpy(per_channel):
    """dx = W^T (dy * relu'(y)) for int8 weights, checked against numpy."""
    rng = np.random.default_rng(4)
    batches, in_features, units = 3, 12, 5
    w_q = rng.integers(-127, 128, size=(units, in_features)).astype(np.int8)
    scales = rng.uniform(0.01, 0.05, size=units).astype(np.float32) if per_channel else np.float32(0.02)
    y_quant = Quant.of(0.1, -30)
    y_q = rng.integers(-128, 128, size=(batches, units)).astype(np.int8)
    dy = rng.normal(size=(batches, units)).astype(np.float32)
    g = Graph()
    tdy, tx = g.input("dy", [batches, units]), g.input("x", [batches, in_features])
    ty = g.input("y", [batches, units], np.int8, quant=y_quant)
    tmode = g.input("mode", [1], np.int32)
    tw = g.const("w", w_q, quant=Quant.of(scales, 0))
    tdx = g.output(g.tensor("dx", [batches, in_features]))
    layer = ops.LinearLayer.fully_connected(in_features, units, ops.Activation.RELU)
    g.op(ops.FULLY_CONNECTED_GRAD, [tdy, tx, ty, tw, -1, tmode, -1], [tdx], layer.options())
    got = g.run({tdy: dy, tx: np.zeros((batches, in_features)), ty: y_q, tmode: np.array([1], np.int32)})[tdx]
    w_real = w_q.astype(np.float64) * np.reshape(scales, (-1, 1) if per_channel else ())
    mask = (0.1 * (y_q.astype(np.float64) + 30)) > 0
    np.testing.assert_allclose(got, (dy * mask) @ w_real, rtol=1e-5, atol=1e-6)


def _model_with_custom_op(name: str) -> bytes:
    g = Graph()
    x = g.input("x", [1, 4])
    y = g.output(g.tensor("y", [1, 4]))
    g.op(name, [x], [y], b"\x01")
    return g.build()


def test_unknown_custom_op_is_a_clear_error_not_a_crash():
    model = _model_with_custom_op("NOT_A_TFLMT_OP")
    with pytest.raises(UnsupportedOpError, match="NOT_A_TFLMT_OP"):
        Interpreter(model)
    # The wheel's own interpreter, given our registerer, fails cleanly too.
    plugin.library()
    with pytest.raises(RuntimeError, match="failed to allocate tensors"):
        tflm_runtime.Interpreter.from_bytes(model, custom_op_registerers=[plugin.REGISTERER], arena_size=65536)


def test_options_of_another_version_are_refused_with_a_message():
    g = Graph()
    tdy, tx, tmode = g.input("dy", [1, 2]), g.input("x", [1, 3]), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", [1, 3]))
    options = bytearray(ops.LinearLayer.fully_connected(3, 2).options())
    options[0] = 99
    g.op(ops.FULLY_CONNECTED_GRAD, [tdy, tx, -1, g.const("w", np.ones((2, 3), np.float32)), -1, tmode, -1], [tdx], bytes(options))
    with pytest.raises(InterpreterError, match="options version is not 1"):
        Interpreter(g.build())
