"""Issue 11: a malformed converted model is refused, never a crash.

Every kernel checks in Prepare that each input and output it reads exists and
has the type and size it expects, and names the op and the problem. Each case
builds a valid model (a converted one, or a one-op graph), checks that it runs,
then mutates one operator or tensor and checks the refusal. The interpreter
runs in a child process, so a crash (SIGSEGV) fails the test instead of
killing pytest.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from graphs import Graph
from tflm_train.converter import ConvertConfig, convert, ops
from tflm_train.converter.model_ir import Model
from tflm_train.demo import example_dir

# Builds the interpreter (Prepare), then invokes once in train mode with
# zeros everywhere else; prints ACCEPTED or REFUSED: <message>.
_CHILD = r"""
import sys
import numpy as np
from tflm_train.converter.model_ir import Model
from tflm_train.runtime import Interpreter, InterpreterError

data = open(sys.argv[1], "rb").read()
try:
    interpreter = Interpreter(data)
    model = Model.from_bytes(data)
    for position, tensor in enumerate(model.main.inputs):
        details = interpreter.input_details(position)
        value = np.zeros(details["shape"], details["dtype"])
        name = model.tensor_name(tensor)
        if name.endswith("mode"):
            value[...] = 1
        elif name.endswith("learning_rate"):
            value[...] = 0.01
        interpreter.set_input(position, value)
    interpreter.invoke()
    print("ACCEPTED")
except InterpreterError as exc:
    print("REFUSED:", exc)
"""

FLOAT32, INT32 = 0, 2  # schema TensorType


def run_in_child(model: bytes, tmp_path) -> str:
    path = tmp_path / "model.tflite"
    path.write_bytes(model)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert result.returncode == 0, f"interpreter process died (exit {result.returncode}): {result.stderr[-2000:]}"
    return result.stdout.strip().splitlines()[-1]


def assert_refused(model: bytes, tmp_path, pattern: str) -> None:
    outcome = run_in_child(model, tmp_path)
    assert outcome.startswith("REFUSED:"), f"the malformed model was accepted: {outcome}"
    assert re.search(pattern, outcome), outcome


# ---- one-op graphs: every backward op with a mode input -----------------------------
def _activation_grad(g: Graph, mode: int) -> str:
    dy, y = g.input("dy", [1, 4]), g.input("y", [1, 4])
    g.op(ops.ACTIVATION_GRAD, [dy, y, mode], [g.output(g.tensor("dx", [1, 4]))],
         ops.activation_grad_options(ops.Activation.RELU))
    return ops.ACTIVATION_GRAD


def _softmax_grad(g: Graph, mode: int) -> str:
    dy, y = g.input("dy", [1, 4]), g.input("y", [1, 4])
    g.op(ops.SOFTMAX_GRAD, [dy, y, mode], [g.output(g.tensor("dx", [1, 4]))], ops.softmax_grad_options(1.0))
    return ops.SOFTMAX_GRAD


def _add_grads(g: Graph, mode: int) -> str:
    a, b = g.input("dy", [1, 4]), g.input("dy2", [1, 4])
    g.op(ops.ADD_GRADS, [mode, a, b], [g.output(g.tensor("dx", [1, 4]))], ops.version_only_options())
    return ops.ADD_GRADS


def _pool_grad(g: Graph, mode: int) -> str:
    dy = g.input("dy", [1, 1, 1, 2])
    options = ops.pool_grad_options("average", (1, 2, 2, 2), (1, 1, 1, 2), (2, 2), (2, 2), (0, 0))
    g.op(ops.POOL_GRAD, [dy, -1, -1, mode], [g.output(g.tensor("dx", [1, 2, 2, 2]))], options)
    return ops.POOL_GRAD


def _mean_grad(g: Graph, mode: int) -> str:
    dy = g.input("dy", [1, 1, 1, 2])
    g.op(ops.MEAN_GRAD, [dy, mode], [g.output(g.tensor("dx", [1, 2, 2, 2]))], ops.mean_grad_options((1, 2, 2, 2), (1, 2)))
    return ops.MEAN_GRAD


def _crop(g: Graph, mode: int) -> str:
    dy = g.input("dy", [1, 4])
    g.op(ops.CROP, [dy, mode], [g.output(g.tensor("dx", [1, 2]))], ops.crop_options((1, 4), (0, 1), (1, 2)))
    return ops.CROP


def _broadcast_grad(g: Graph, mode: int) -> str:
    dy = g.input("dy", [2, 3])
    g.op(ops.BROADCAST_GRAD, [dy, -1, mode], [g.output(g.tensor("dx", [1, 3]))],
         ops.broadcast_grad_options("add", (2, 3), (1, 3), (2, 3)))
    return ops.BROADCAST_GRAD


def _fully_connected_grad(g: Graph, mode: int) -> str:
    dy = g.input("dy", [1, 2])
    w = g.const("w", np.ones((2, 3), np.float32))
    layer = ops.LinearLayer.fully_connected(3, 2)
    g.op(ops.FULLY_CONNECTED_GRAD, [dy, -1, -1, w, -1, mode, -1], [g.output(g.tensor("dx", [1, 3]))], layer.options())
    return ops.FULLY_CONNECTED_GRAD


ONE_OP_GRAPHS = [_activation_grad, _softmax_grad, _add_grads, _pool_grad, _mean_grad, _crop, _broadcast_grad,
                 _fully_connected_grad]


def one_op_model(build, mutate=None) -> tuple[bytes, str, int]:
    """(model, op name, position of the op's mode input)."""
    g = Graph()
    mode = g.input("mode", [1], np.int32)
    op_name = build(g, mode)
    model = g.model
    op = model.operators[0]
    position = list(op.inputs).index(mode)
    if mutate is not None:
        mutate(model, op, position, mode)
    return g.build(), op_name, position


@pytest.mark.parametrize("build", ONE_OP_GRAPHS, ids=lambda f: f.__name__.strip("_"))
def test_one_op_graph_runs_unmutated(build, tmp_path):
    model, _, _ = one_op_model(build)
    assert run_in_child(model, tmp_path) == "ACCEPTED"


def _drop_mode(model, op, position, mode):
    set_input(op, position, -1)


@pytest.mark.parametrize("build", ONE_OP_GRAPHS, ids=lambda f: f.__name__.strip("_"))
def test_missing_mode_input_is_refused(build, tmp_path):
    """Before: Prepare never looked at `mode`; Eval dereferenced it (SIGSEGV)."""
    model, op_name, position = one_op_model(build, _drop_mode)
    assert_refused(model, tmp_path, rf"{op_name}: input {position} \(mode\) is missing")


def _float_mode(model, op, position, mode):
    model.tensors[mode].type = FLOAT32


@pytest.mark.parametrize("build", ONE_OP_GRAPHS, ids=lambda f: f.__name__.strip("_"))
def test_mode_of_another_type_is_refused(build, tmp_path):
    model, op_name, _ = one_op_model(build, _float_mode)
    assert_refused(model, tmp_path, rf"{op_name}: mode must be int32")


def _rank_seven_dy(model, op, position, mode):
    dy = next(i for i in range(len(model.tensors)) if model.tensor_name(i) == "dy")
    shape = list(model.tensors[dy].shape)
    model.tensors[dy].shape = [1] * (7 - len(shape)) + shape


@pytest.mark.parametrize("build", ONE_OP_GRAPHS, ids=lambda f: f.__name__.strip("_"))
def test_tensor_of_rank_seven_is_refused(build, tmp_path):
    """Before: the wheel port read the tensor's dims after releasing it."""
    model, op_name, _ = one_op_model(build, _rank_seven_dy)
    assert_refused(model, tmp_path, rf"rank 7, more than 6.*{op_name}: input \d+ \((dy|gradient part)\) cannot be used")


# ---- converted models ----------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def converted(method: str, base: str) -> bytes:
    return convert((example_dir() / base).read_bytes(), ConvertConfig(method=method)).model


def mutated(model_bytes: bytes, mutate) -> bytes:
    model = Model.from_bytes(model_bytes)
    mutate(model)
    return model.sealed_bytes()  # edited, checksum recomputed: reaches the kernels


def first_op(model: Model, op_type: str):
    return next(op for op in model.operators if model.op_type(op) == op_type)


def set_input(op, position: int, tensor: int) -> None:
    inputs = [int(t) for t in op.inputs]
    inputs[position] = tensor
    op.inputs = inputs


def test_converted_models_run_unmutated(tmp_path):
    assert run_in_child(converted("adapter", "model_float.tflite"), tmp_path) == "ACCEPTED"
    assert run_in_child(converted("lora", "model_int8.tflite"), tmp_path) == "ACCEPTED"


def test_adapter_grad_without_its_mode_input_is_refused(tmp_path):
    """Issue 11's crash: TFLMT_ADAPTER_GRAD read a missing optional mode in Eval."""

    def drop_mode(model):
        set_input(first_op(model, ops.ADAPTER_GRAD), 4, -1)

    model = mutated(converted("adapter", "model_float.tflite"), drop_mode)
    assert_refused(model, tmp_path, r"TFLMT_ADAPTER_GRAD: input 4 \(mode\) is missing")


def test_adapter_grad_with_an_input_cut_off_is_refused(tmp_path):
    def cut(model):
        op = first_op(model, ops.ADAPTER_GRAD)
        op.inputs = list(op.inputs)[:4]

    model = mutated(converted("adapter", "model_float.tflite"), cut)
    assert_refused(model, tmp_path, r"TFLMT_ADAPTER_GRAD: has 4 inputs, expected 5")


def test_adapter_hidden_of_rank_seven_is_refused(tmp_path):
    def rank_seven(model):
        op = first_op(model, ops.ADAPTER)
        hidden = op.outputs[1]
        model.tensors[hidden].shape = [1, 1, 1, 1, 1, *model.tensors[hidden].shape]

    model = mutated(converted("adapter", "model_float.tflite"), rank_seven)
    assert_refused(model, tmp_path, r"rank 7, more than 6.*TFLMT_ADAPTER: output 1 \(a\)")


def test_adapter_hidden_of_another_type_is_refused(tmp_path):
    def int_hidden(model):
        hidden = first_op(model, ops.ADAPTER).outputs[1]
        model.tensors[hidden].type = INT32

    model = mutated(converted("adapter", "model_float.tflite"), int_hidden)
    assert_refused(model, tmp_path, r"TFLMT_ADAPTER: a has type 2, expected 1")


def test_linear_grad_without_its_mode_input_is_refused(tmp_path):
    def drop_mode(model):
        set_input(first_op(model, ops.FULLY_CONNECTED_GRAD), 5, -1)

    model = mutated(converted("lora", "model_int8.tflite"), drop_mode)
    assert_refused(model, tmp_path, r"TFLMT_FULLY_CONNECTED_GRAD: input 5 \(mode\) is missing")


def test_linear_layer_without_its_state_is_refused(tmp_path):
    def drop_state(model):
        set_input(first_op(model, ops.FULLY_CONNECTED), 3, -1)

    model = mutated(converted("lora", "model_int8.tflite"), drop_state)
    assert_refused(model, tmp_path, r"TFLMT_FULLY_CONNECTED: input 3 \(state\) is missing")
