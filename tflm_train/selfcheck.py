"""`tflm-train selfcheck`: proves the install works end to end.

Builds a one-operator model with the project's own converter code, runs our
fully-connected gradient kernel inside the tflite-micro interpreter, and
compares its numbers with numpy.
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter import ops
from tflm_train.converter.model_ir import Model
from tflm_train.runtime import Interpreter


def input_grad_model(weights: np.ndarray, batches: int) -> bytes:
    """dx = dy W for a frozen float FULLY_CONNECTED with weights W [units, in]."""
    units, in_features = weights.shape
    model = Model.empty()
    dy = model.add_tensor("dy", [batches, units], np.float32)
    x = model.add_tensor("x", [batches, in_features], np.float32)
    w = model.add_tensor("weights", [units, in_features], np.float32, data=weights)
    mode = model.add_tensor("mode", [1], np.int32)
    dx = model.add_tensor("dx", [batches, in_features], np.float32)
    layer = ops.LinearLayer.fully_connected(in_features, units)
    model.append_op(ops.FULLY_CONNECTED_GRAD, [dy, x, -1, w, -1, mode, -1], [dx], custom_options=layer.options())
    model.main.inputs = [dy, x, mode]
    model.main.outputs = [dx]
    return model.sealed_bytes()  # with the checksum convert writes (no guarded child needed)


def run(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(10, 32)).astype(np.float32)
    dy = rng.normal(size=(2, 10)).astype(np.float32)
    interpreter = Interpreter(input_grad_model(weights, batches=2))
    interpreter.set_input(0, dy)
    interpreter.set_input(1, np.zeros((2, 32), np.float32))
    interpreter.set_input(2, np.array([ops.Mode.TRAIN], np.int32))
    interpreter.invoke()
    got = interpreter.get_output(0)
    want = dy.astype(np.float64) @ weights.astype(np.float64)
    error = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    return {"kernel": ops.FULLY_CONNECTED_GRAD, "max_relative_error": error, "ok": error < 1e-5}
