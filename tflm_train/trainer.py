"""A converted model running in the TFLM interpreter, driven like a device.

Each method here is a handful of interpreter calls that firmware makes the
same way through MicroInterpreter (see docs/device_api.md):

  train_step   inputs x, target, learning rate, mode=TRAIN; Invoke(); read loss
               (a sample with a NaN/inf value: mode=SKIP, counted in the state)
  predict      input x, mode=INFER; Invoke(); read output 0
  save_state   read the `state` output, clear LIVE, seal the CRC (the file)
  load_state   Reset(); write the `state` input with LIVE clear; the next
               Invoke() verifies it
  reset        MicroInterpreter::Reset(): back to the initial adapter
  reset_stream a new clip for a streaming model: Reset(), then the state back
"""

from __future__ import annotations

import numpy as np

from tflm_train.converter.merge import initial_state
from tflm_train.converter.model_ir import Model, ModelError
from tflm_train.converter.ops import Mode
from tflm_train.converter.state_format import HEADER_BYTES, Header, StateError, export, imported, validate
from tflm_train.converter.training_info import TrainingInfo, training_info
from tflm_train.data import DataError
from tflm_train.runtime import Interpreter, check_integrity


# The integer input types' limits, read once: np.iinfo costs more than the
# whole quantization of a small sample.
_INT_LIMITS = {np.dtype(t): (int(np.iinfo(t).min), int(np.iinfo(t).max)) for t in (np.int8, np.uint8, np.int16, np.int32)}


def quantize(values: np.ndarray, details: dict) -> np.ndarray:
    """Real values -> what an input tensor of `details` holds.

    TFLM's QUANTIZE convention, which the device helper (device/trainer.cc)
    follows too: value / scale in float32, rounded half away from zero.
    (A NaN becomes the type's minimum: train_step never quantizes one.)
    """
    dtype = np.dtype(details["dtype"])
    q = details["quantization_parameters"]
    if dtype == np.float32 or len(q["scales"]) == 0:
        return np.asarray(values).astype(dtype)
    scale, zero = np.float32(q["scales"][0]), int(q["zero_points"][0])
    low, high = _INT_LIMITS.get(dtype) or (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    with np.errstate(invalid="ignore", over="ignore"):
        steps = (np.asarray(values, np.float32) / scale).astype(np.float64)
        # Half away from zero: trunc(s + 0.5) for s >= 0, trunc(s - 0.5) below.
        steps = np.trunc(steps + np.copysign(0.5, steps))
    # Clamp in steps: fmax ignores a NaN (-> the minimum); +-inf -> the limits.
    np.fmax(steps, low - zero, out=steps)
    np.minimum(steps, high - zero, out=steps)
    steps += zero
    return steps.astype(dtype)


def all_finite(values) -> bool:
    """False when a float array holds a NaN or an infinity (integers always pass)."""
    array = np.asarray(values)
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


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
        # One sample per invocation, as on a device: x and y carry a batch of 1.
        for role, details in (("input", self.input_details), ("output", self.output_details)):
            shape = [int(d) for d in details["shape"]]
            if len(shape) < 1 or shape[0] != 1:
                raise ModelError(
                    f"the model's {role} 0 has shape {shape}: tflm-train runs models whose first input and "
                    "output have a batch dimension of 1"
                )

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
        check_integrity(model_bytes, guard="none")  # damage first: one clear line (the guard runs in Interpreter)
        info = training_info(model)
        if info is None:
            raise ModelError("model was not converted by tflm-train (run: tflm-train convert)")
        self.info: TrainingInfo = info
        self._initial_state = initial_state(model, info)
        try:
            self._mode = int(info.input_index("mode"))
            self._learning_rate = int(info.input_index("learning_rate"))
            self._state_in = int(info.input_index("state"))
            self._state_out = int(info.output_index("state"))
            self._loss = int(info.output_index("loss"))
            self._target = int(info.input_index("target"))
        except (KeyError, TypeError, ValueError):
            raise ModelError("the model's tflm_train metadata is corrupt (no input/output roles)") from None
        self._check_interface(model)
        super().__init__(model_bytes, arena_size)
        self._target_details = self.interpreter.input_details(self._target)
        self._labels = self._target_details["dtype"] == np.int32
        # `convert --distill T`: the target row is [label, weight, teacher
        # probabilities] (tflm_train/distill.py); a bare label trains as
        # plain cross-entropy (weight 0).
        distill = info.raw.get("distill")
        self.distill_temperature: float | None = None if distill is None else float(distill["temperature"])
        # A streaming model writes resource variables on every invocation.
        self.streams = any(model.op_type(op) == "ASSIGN_VARIABLE" for op in model.operators)

    def _check_interface(self, model: Model) -> None:
        """The inputs and outputs the metadata names have the types and
        shapes the training verbs write and read. Read from the file, before
        the interpreter exists: a damaged model is refused here with one
        line, not by an internal error in a later call."""
        activation = ("float32", "int8", "int16", "uint8")
        state_shape = (self.info.state_bytes,)
        expected = [
            ("input", "x", 0, activation, None),
            ("input", "target", self._target, ("int32", "float32"), None),
            ("input", "learning_rate", self._learning_rate, ("float32",), (1,)),
            ("input", "mode", self._mode, ("int32",), (1,)),
            ("input", "state", self._state_in, ("uint8",), state_shape),
            ("output", "y", 0, activation, None),
            ("output", "loss", self._loss, ("float32",), (1,)),
            ("output", "state", self._state_out, ("uint8",), state_shape),
        ]
        main = model.main
        for kind, role, index, dtypes, shape in expected:
            tensors = main.inputs if kind == "input" else main.outputs
            if tensors is None or not 0 <= index < len(tensors):
                raise ModelError(f"converted model has no {role} {kind} (index {index}): the file is damaged")
            tensor = int(tensors[index])
            try:
                dtype, got_shape = np.dtype(model.dtype(tensor)).name, tuple(int(d) for d in model.shape(tensor))
            except Exception:  # an unknown tensor type in a damaged file
                raise ModelError(f"converted model's {role} {kind} has an unknown type: the file is damaged") from None
            if dtype not in dtypes or (shape is not None and got_shape != shape):
                want = " or ".join(dtypes) + (f" {list(shape)}" if shape else "")
                raise ModelError(
                    f"converted model's {role} {kind} is {dtype} {list(got_shape)}, expected {want}: the file is damaged"
                )

    # ---- the device verbs -------------------------------------------------------
    def _set_mode(self, mode: Mode) -> None:
        self.interpreter.set_input(self._mode, np.array([int(mode)], np.int32))

    def _prepare_inference(self) -> None:
        self._set_mode(Mode.INFER)

    def _check_labels(self, y) -> None:
        """Cross-entropy labels must name one of the model's classes."""
        classes = self.info.classes
        if isinstance(y, (int, np.integer)) and 0 <= y < classes:
            return  # the common case, without numpy's per-call cost
        labels = np.asarray(y)
        if labels.dtype.kind in "iu":
            bad = labels[(labels < 0) | (labels >= classes)]
        elif labels.dtype.kind == "f":
            bad = labels[~(np.isfinite(labels) & (labels == np.round(labels)) & (labels >= 0) & (labels < classes))]
        else:
            raise DataError(f"labels must be integers, got {labels.dtype}")
        if bad.size:
            raise DataError(f"label {bad.reshape(-1)[0]} is not one of the model's classes [0, {classes})")

    def _distill_row(self, y) -> np.ndarray:
        """A distillation model's target row: y as given (a full row), or a
        bare label as [label, 0, zeros] (plain cross-entropy)."""
        y = np.asarray(y)
        width = self.info.classes + 2
        if y.ndim == 0 or y.size == 1:
            self._check_labels(y.reshape(-1)[0] if y.ndim else y.item())
            row = np.zeros(width, np.float32)
            row[0] = float(y.reshape(-1)[0])
            return row
        if y.size != width:
            raise DataError(f"a distillation target has {width} values (label, weight, {width - 2} probabilities), got {y.size}")
        self._check_labels(y.reshape(-1)[0])
        return y.reshape(width).astype(np.float32)

    def teacher_logits(self, x) -> np.ndarray:
        """A `--distill` model: the logits its loss reads, from one inference
        with the current adapter (the model's `teacher_logits` output;
        tflmt::Trainer::RecordTeacher reads the same)."""
        index = self.info.output_index("teacher_logits")
        self.interpreter.set_input(0, quantize(np.asarray(x)[None], self.input_details))
        self._prepare_inference()
        self.interpreter.invoke()
        return dequantize(self.interpreter.get_output(index), self.interpreter.output_details(index))[0]

    def set_target(self, y) -> None:
        if self.distill_temperature is not None:
            y = self._distill_row(y)
        elif self._labels:
            self._check_labels(y)
        self.interpreter.set_input(self._target, quantize(np.asarray(y)[None], self._target_details))

    def train_step(self, x, y, learning_rate: float) -> float:
        """One training step; returns the sample's loss (before the update).

        A sample holding a NaN or an infinity (in x or a float target) is not
        trained on: the model runs with mode SKIP, which counts it in the
        state (Header.skipped_samples), and the loss is NaN. A label outside
        the model's classes raises DataError.
        """
        x = np.asarray(x)
        if self.distill_temperature is not None:
            y = self._distill_row(y)
        elif self._labels:
            self._check_labels(y)
        if not (all_finite(x) and (self._labels or all_finite(y))):
            return self._skip_step()
        self.interpreter.set_input(0, quantize(x[None], self.input_details))
        self.interpreter.set_input(self._target, quantize(np.asarray(y)[None], self._target_details))
        self.interpreter.set_input(self._learning_rate, np.array([learning_rate], np.float32))
        self._set_mode(Mode.TRAIN)
        self.interpreter.invoke()
        return float(self.interpreter.get_output(self._loss)[0])

    def _skip_step(self) -> float:
        """Counts a bad sample in the state, as a device does (mode SKIP).
        Its values are never quantized: int8 would turn NaN into a number."""
        self.interpreter.set_input(0, np.zeros(self.input_details["shape"], self.input_details["dtype"]))
        self.interpreter.set_input(self._target, np.zeros(self._target_details["shape"], self._target_details["dtype"]))
        self._set_mode(Mode.SKIP)
        self.interpreter.invoke()
        return float(self.interpreter.get_output(self._loss)[0])

    def evaluate_loss(self, x, y) -> float:
        """The loss on one sample; nothing changes (mode EVALUATE)."""
        self.interpreter.set_input(0, quantize(np.asarray(x)[None], self.input_details))
        self.set_target(y)
        self._set_mode(Mode.EVALUATE)
        self.interpreter.invoke()
        return float(self.interpreter.get_output(self._loss)[0])

    def _live_state(self) -> bytes | None:
        """The state tensor's bytes, or None before the first invocation."""
        blob = self.interpreter.get_output(self._state_out).tobytes()
        return None if blob[:HEADER_BYTES] == bytes(HEADER_BYTES) else blob

    def save_state(self) -> bytes:
        """The state as a file: LIVE cleared and the CRC sealed (an export).
        The device helper's tflmt::Trainer::SaveState writes the same bytes."""
        live = self._live_state()
        if live is None:
            return self._initial_state  # not invoked yet: still the initial state
        return export(live)

    export_state = save_state

    def load_state(self, blob: bytes) -> Header:
        """Checks `blob` against this model, resets the interpreter (as
        tflmt::Trainer::LoadState does: a streaming model's buffers empty
        too), then writes it into the state with LIVE clear, so the next
        invocation verifies it in the kernel as well."""
        blob = bytes(blob)
        header = validate(blob, self.info.expected_header(), self.info.state_bytes)
        self.interpreter.reset()
        self.interpreter.set_input(self._state_in, np.frombuffer(imported(blob), np.uint8))
        return header

    def state_header(self) -> Header:
        """The current header: step, skipped updates and samples, ... (its
        CRC field is only meaningful in a saved state)."""
        live = self._live_state()
        return Header.unpack(self._initial_state if live is None else live)

    def reset(self) -> None:
        """Everything back to the start, the adapter included (a rollback)."""
        self.interpreter.reset()

    def reset_stream(self) -> None:
        """Empties a streaming model's buffers (its resource variables) but
        keeps the adapter: Reset(), then the state tensor's bytes back. They
        never left this interpreter, so they stay LIVE: no re-verification."""
        live = self._live_state()
        self.interpreter.reset()
        if live is not None:
            self.interpreter.set_input(self._state_in, np.frombuffer(live, np.uint8))


__all__ = ["PlainModel", "StateError", "TrainableModel", "dequantize", "quantize"]
