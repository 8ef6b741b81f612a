"""A converted model running in the TFLM interpreter, driven like a device.

Each method here is a handful of interpreter calls that firmware makes the
same way through MicroInterpreter (see docs/device_api.md):

  train_step   inputs x, target, learning rate, mode=TRAIN; Invoke(); read loss
  predict      input x, mode=INFER; Invoke(); read output 0
  save_state   read the `state` output (its bytes are the state file)
  load_state   write the `state` input; the next Invoke() checks it
  reset        MicroInterpreter::Reset(): back to the initial adapter
  reset_stream a new clip for a streaming model: Reset(), then the state back
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter.merge import initial_state
from tflm_train.converter.model_ir import Model, ModelError
from tflm_train.converter.ops import Mode
from tflm_train.converter.state_format import HEADER_BYTES, Header, StateError, validate
from tflm_train.converter.training_info import TrainingInfo, training_info
from tflm_train.runtime import Interpreter


def quantize(values: np.ndarray, details: dict) -> np.ndarray:
    """Real values -> what an input tensor of `details` holds.

    TFLM's QUANTIZE convention, which the device helper (device/trainer.cc)
    follows too: value / scale in float32, rounded half away from zero.
    """
    dtype = np.dtype(details["dtype"])
    q = details["quantization_parameters"]
    if dtype == np.float32 or len(q["scales"]) == 0:
        return np.asarray(values).astype(dtype)
    scale, zero = np.float32(q["scales"][0]), int(q["zero_points"][0])
    with np.errstate(invalid="ignore", over="ignore"):
        steps = (np.asarray(values, np.float32) / scale).astype(np.float64)
        steps = np.where(steps >= 0, np.floor(steps + 0.5), np.ceil(steps - 0.5))
    info = np.iinfo(dtype)
    steps = np.nan_to_num(steps, nan=info.min - zero)
    return np.clip(steps + zero, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, details: dict) -> np.ndarray:
    """An output tensor's values -> real values."""
    q = details["quantization_parameters"]
    if np.dtype(details["dtype"]) == np.float32 or len(q["scales"]) == 0:
        return np.asarray(values, np.float32)
    scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
    return ((np.asarray(values, np.float64) - zero) * scale).astype(np.float32)


class PlainModel:
    """Any .tflite (original, merged, or converted in inference mode)."""

    def __init__(self, model_bytes: bytes, arena_size: int | None = None):
        self.interpreter = Interpreter(model_bytes, arena_size)
        self.input_details = self.interpreter.input_details(0)
        self.output_details = self.interpreter.output_details(0)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input_details["shape"][1:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.output_details["shape"][1:])

    def _prepare_inference(self) -> None:
        """Sets the inputs besides x that a forward pass needs (none here)."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_input(0, quantize(np.asarray(x)[None], self.input_details))
        self._prepare_inference()
        self.interpreter.invoke()
        return dequantize(self.interpreter.get_output(0), self.output_details)[0]


class TrainableModel(PlainModel):
    """A model made by `tflm-train convert`, with its training state."""

    def __init__(self, model_bytes: bytes, arena_size: int | None = None):
        model = Model.from_bytes(model_bytes)
        info = training_info(model)
        if info is None:
            raise ModelError("model was not converted by tflm-train (run: tflm-train convert)")
        self.info: TrainingInfo = info
        self._initial_state = initial_state(model, info)
        super().__init__(model_bytes, arena_size)
        self._target_details = self.interpreter.input_details(info.input_index("target"))
        self._mode = info.input_index("mode")
        self._learning_rate = info.input_index("learning_rate")
        self._state_in = info.input_index("state")
        self._state_out = info.output_index("state")
        self._loss = info.output_index("loss")
        # A streaming model writes resource variables on every invocation.
        self.streams = any(model.op_type(op) == "ASSIGN_VARIABLE" for op in model.operators)

    # ---- the device verbs -------------------------------------------------------
    def _set_mode(self, mode: Mode) -> None:
        self.interpreter.set_input(self._mode, np.array([int(mode)], np.int32))

    def _prepare_inference(self) -> None:
        self._set_mode(Mode.INFER)

    def set_target(self, y) -> None:
        self.interpreter.set_input(self.info.input_index("target"), quantize(np.asarray(y)[None], self._target_details))

    def train_step(self, x, y, learning_rate: float) -> float:
        self.interpreter.set_input(0, quantize(np.asarray(x)[None], self.input_details))
        self.set_target(y)
        self.interpreter.set_input(self._learning_rate, np.array([learning_rate], np.float32))
        self._set_mode(Mode.TRAIN)
        self.interpreter.invoke()
        return float(self.interpreter.get_output(self._loss)[0])

    def evaluate_loss(self, x, y) -> float:
        """The loss on one sample; nothing changes (mode EVALUATE)."""
        self.interpreter.set_input(0, quantize(np.asarray(x)[None], self.input_details))
        self.set_target(y)
        self._set_mode(Mode.EVALUATE)
        self.interpreter.invoke()
        return float(self.interpreter.get_output(self._loss)[0])

    def save_state(self) -> bytes:
        blob = self.interpreter.get_output(self._state_out).tobytes()
        if blob[:HEADER_BYTES] == bytes(HEADER_BYTES):
            return self._initial_state  # not invoked yet: still the initial state
        return blob

    def load_state(self, blob: bytes) -> Header:
        """Checks `blob` against this model, then writes it into the state."""
        header = validate(bytes(blob), self.info.expected_header(), self.info.state_bytes)
        self.interpreter.set_input(self._state_in, np.frombuffer(blob, np.uint8))
        return header

    def state_header(self) -> Header:
        return Header.unpack(self.save_state())

    def reset(self) -> None:
        """Everything back to the start, the adapter included (a rollback)."""
        self.interpreter.reset()

    def reset_stream(self) -> None:
        """Empties a streaming model's buffers (its resource variables) but
        keeps the adapter: save the state, Reset(), restore it. Firmware does
        the same three calls (tflmt::Trainer::LoadState resets first)."""
        state = self.save_state()
        self.interpreter.reset()
        self.load_state(state)


__all__ = ["PlainModel", "StateError", "TrainableModel", "dequantize", "quantize"]
