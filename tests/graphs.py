"""Small hand-built models for kernel tests, run in the TFLM interpreter.

`Graph` builds a model whose inputs, constants and operators the test names,
with tflm-train's own model IR, and runs it in the tflite-micro interpreter
with our kernels (tflm_train.runtime.Interpreter).
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter.model_ir import Model, Quant
from tflm_train.converter.state_format import HEADER_BYTES, Header
from tflm_train.runtime import Interpreter


class Graph:
    def __init__(self):
        self.model = Model.empty()
        self._inputs: list[int] = []
        self._outputs: list[int] = []

    def input(self, name: str, shape, dtype=np.float32, quant: Quant | None = None) -> int:
        t = self.model.add_tensor(name, shape, dtype, quant=quant)
        self._inputs.append(t)
        return t

    def const(self, name: str, values: np.ndarray, quant: Quant | None = None) -> int:
        values = np.asarray(values)
        return self.model.add_tensor(name, values.shape, values.dtype, data=values, quant=quant)

    def tensor(self, name: str, shape, dtype=np.float32, quant: Quant | None = None) -> int:
        return self.model.add_tensor(name, shape, dtype, quant=quant)

    def state(self, params: np.ndarray, slots: int = 0) -> int:
        """A training-state variable with these parameters (an input and an output)."""
        nbytes = HEADER_BYTES + 4 * params.size * (2 + slots)
        t = self.model.add_tensor("state", [nbytes], np.uint8, is_variable=True)
        self._inputs.append(t)
        self._outputs.append(t)
        return t

    def op(self, op_type: str, inputs, outputs, options: bytes | None = None, **kwargs) -> None:
        self.model.append_op(op_type, inputs, outputs, custom_options=options, **kwargs)

    def output(self, tensor: int) -> int:
        self._outputs.append(tensor)
        return tensor

    def build(self) -> bytes:
        self.model.main.inputs = list(self._inputs)
        self.model.main.outputs = list(self._outputs)
        return self.model.to_bytes()

    def run(self, feeds: dict[int, np.ndarray], arena_size: int | None = None) -> dict[int, np.ndarray]:
        """Invokes once with `feeds` (tensor -> value); returns every output."""
        interpreter = Interpreter(self.build(), arena_size=arena_size)
        for position, tensor in enumerate(self._inputs):
            interpreter.set_input(position, feeds[tensor])
        interpreter.invoke()
        return {tensor: interpreter.get_output(i) for i, tensor in enumerate(self._outputs)}


def state_blob(params: np.ndarray, slots: int = 0) -> np.ndarray:
    """Header (parameter count set) + parameters + zero gradients/slots."""
    params = np.asarray(params, np.float32).reshape(-1)
    header = Header(base_model_hash=1, layout_hash=2, payload_bytes=4 * params.size * (2 + slots), param_count=params.size)
    blob = header.pack() + params.tobytes() + bytes(4 * params.size * (1 + slots))
    return np.frombuffer(blob, np.uint8).copy()


def state_grads(blob: np.ndarray, count: int) -> np.ndarray:
    """The gradient area of a state output."""
    return np.frombuffer(blob.tobytes(), np.float32, count=count, offset=HEADER_BYTES + 4 * count).copy()


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(np.max(np.abs(want)), 1e-30)
    return float(np.max(np.abs(got - want)) / scale)
