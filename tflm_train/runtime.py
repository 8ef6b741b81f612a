"""The TFLM x86 reference interpreter (tflite-micro wheel) with our kernels.

`Interpreter` is the only way tflm_train creates interpreters: it loads the
kernel library, registers the ops, and turns the interpreter's failures into
exceptions that carry the kernels' own messages. It adds nothing a device
cannot do: set inputs, invoke, read outputs, reset.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

import numpy as np
from tflite_micro.python.tflite_micro import runtime as tflm_runtime

from tflm_train import plugin
from tflm_train.converter import integrity
from tflm_train.converter.integrity import Checksum
from tflm_train.converter.model_ir import Model, ModelError


from tflm_train.errors import TflmTrainError  # the base of every user-fixable error


class InterpreterError(TflmTrainError, RuntimeError):
    """The TFLM interpreter refused the model or failed to run it."""


class UnsupportedOpError(InterpreterError):
    """The model needs a custom op that neither TFLM nor tflm-train provides."""


class NativeStderr:
    """Where C code's writes to fd 2 (TFLM's MicroPrintf) go during a call.

    One file per Interpreter, opened once: a call only swaps fd 2 in and out
    (two dup2s), and the file is read only when the call failed - the text is
    then the interpreter's own explanation. Output of calls that succeeded is
    dropped with the next failure's read (TFLM prints nothing on success).
    """

    def __init__(self) -> None:
        self._sink = tempfile.TemporaryFile()

    @contextlib.contextmanager
    def redirected(self) -> Iterator[None]:
        saved = os.dup(2)
        os.dup2(self._sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    def take_lines(self) -> list[str]:
        """What was written since the last take, as non-empty lines."""
        fd = self._sink.fileno()
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        text = b"".join(chunks).decode(errors="replace")
        return [line for line in text.splitlines() if line.strip()]

    def close(self) -> None:
        self._sink.close()


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Collects what C code writes to fd 2 meanwhile (one-off calls)."""
    lines: list[str] = []
    sink = NativeStderr()
    try:
        with sink.redirected():
            yield lines
    finally:
        lines.extend(sink.take_lines())
        sink.close()


def custom_ops_of(model_bytes: bytes) -> list[str]:
    model = Model.from_bytes(model_bytes)
    names = set()
    for op in model.operators:
        code = model.raw.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == 32:  # CUSTOM
            names.add(model.op_type(op))
    return sorted(names)


def check_integrity(model_bytes: bytes, guard: str = "converted") -> None:
    """Refuses a model damaged after tflm-train wrote it, before any
    interpreter sees it (stock TFLM kernels trust their model and can crash
    on a corrupt one; TFLM is not ours to patch).

    A model with a checksum (converter/integrity.py: convert and merge write
    one) must match it: a CRC-32 over the file, microseconds. A model without
    one cannot be checked that way; `guard` says which of those are first run
    once in a guarded child process (memory.check_prepares, ~0.5 s):
    "converted" the ones with tflm-train's ops (converted by an older
    tflm-train), "all" every one (the CLI, for a user's own .tflite), "none".
    """
    if integrity.refuse_damaged(model_bytes) is Checksum.OK:
        return
    if guard == "all" or (guard == "converted" and any(name.startswith("TFLMT_") for name in custom_ops_of(model_bytes))):
        from tflm_train.memory import check_prepares  # memory imports this module

        check_prepares(model_bytes)


def _message(summary: str, errors: str, stderr_lines: list[str]) -> str:
    details = [line for line in errors.splitlines() if line.strip()]
    details += [line for line in stderr_lines if line not in details]
    return summary + (": " + "; ".join(details) if details else "")


class Interpreter:
    """One TFLM interpreter over one model, with tflm-train's ops registered."""

    def __init__(self, model_bytes: bytes, arena_size: int | None = None, guard: str = "converted"):
        """guard: which models without a checksum are first run in a guarded
        child (check_integrity); the guard's own worker passes "none"."""
        model_bytes = bytes(model_bytes)
        try:
            custom = custom_ops_of(model_bytes)
        except ModelError as exc:
            raise InterpreterError(str(exc)) from None
        check_integrity(model_bytes, guard)
        provided = set(plugin.op_names())
        missing = [name for name in custom if name not in provided]
        if missing:
            raise UnsupportedOpError(
                f"model uses custom op {', '.join(missing)}, which tflm-train does not provide"
            )
        if arena_size is None:
            arena_size = max(1024 * 1024, 16 * len(model_bytes))
        self.arena_size = arena_size
        self.model_bytes = model_bytes
        plugin.library()  # must be loaded (RTLD_GLOBAL) before the wheel looks it up
        plugin.clear_errors()
        self._stderr = NativeStderr()
        with self._stderr.redirected():
            try:
                self._interpreter = tflm_runtime.Interpreter.from_bytes(
                    model_bytes,
                    custom_op_registerers=[plugin.REGISTERER],
                    arena_size=arena_size,
                )
                failure = None
            except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
                # The wheel's Python wrapper reads the model's options itself and
                # raises AttributeError/TypeError on some corrupt ones.
                failure = exc
        if failure is not None:
            lines = self._stderr.take_lines()
            self._stderr.close()
            raise InterpreterError(
                _message(f"TFLM could not prepare the model ({failure})", plugin.take_errors(), lines)
            ) from None
        # Details never change after preparation: read once, not per call.
        self._input_details: dict[int, dict] = {}

    def set_input(self, index: int, value) -> None:
        details = self.input_details(index)
        array = np.asarray(value, dtype=details["dtype"])
        shape = tuple(int(d) for d in details["shape"])
        if array.size != int(np.prod(shape)):
            # The caller sized the value from the model's metadata: they disagree.
            raise InterpreterError(
                f"input {index} holds {int(np.prod(shape))} values (shape {list(shape)}), was given {array.size}: "
                "the model's metadata does not match its tensors (a damaged model) or the data has the wrong shape"
            )
        array = array.reshape(shape)
        self._interpreter.set_input(array, index)

    def get_output(self, index: int) -> np.ndarray:
        return self._interpreter.get_output(index)

    def input_details(self, index: int) -> dict:
        details = self._input_details.get(index)
        if details is None:
            details = self._input_details[index] = self._interpreter.get_input_details(index)
        return details

    def output_details(self, index: int) -> dict:
        return self._interpreter.get_output_details(index)

    def invoke(self) -> None:
        with self._stderr.redirected():
            try:
                self._interpreter.invoke()
                failure = None
            except RuntimeError as exc:
                failure = exc
        if failure is not None:
            raise InterpreterError(
                _message("invoke failed", plugin.take_errors(), self._stderr.take_lines())
            ) from None

    def reset(self) -> None:
        with self._stderr.redirected():
            try:
                self._interpreter.reset()
                failure = None
            except RuntimeError as exc:
                failure = exc
        if failure is not None:
            raise InterpreterError(_message("reset failed", plugin.take_errors(), self._stderr.take_lines())) from None
