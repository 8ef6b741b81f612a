"""Worker for tflm_train.memory: reads arena sizes, one per line, and answers
"1" (the model allocates in that many bytes) or "0<TAB>why not" per line.
A line "<size> invoke" also invokes the model once, every input zero.

It runs in its own process because this TFLM build can crash while planning
memory (see tflm_train/memory.py); the parent tells a crash from an answer.
"""

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from tflm_train import runtime
from tflm_train.converter.model_ir import Model
from tflm_train.runtime import Interpreter, InterpreterError


def _invoke_with_zeros(interpreter: Interpreter, model_bytes: bytes) -> None:
    model = Model.from_bytes(model_bytes)
    for index in range(len(model.main.inputs if model.main.inputs is not None else [])):
        details = interpreter.input_details(index)
        interpreter.set_input(index, np.zeros(details["shape"], details["dtype"]))
    interpreter.invoke()


@contextlib.contextmanager
def _captured_in(path: Path) -> Iterator[list[str]]:
    """runtime.native_stderr_captured, but into a named file that survives a
    crash: UndefinedBehaviorSanitizer writes its report to fd 2 (it ignores
    log_path in an ASan process), which the runtime has redirected to an
    unlinked temporary file at that moment."""
    lines: list[str] = []
    with open(path, "w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode(errors="replace").splitlines() if line.strip())
    path.unlink()  # not reached when the process dies inside


def keep_native_stderr_on_crash(directory: Path) -> None:
    """Makes the runtime capture TFLM's stderr in directory/native-stderr-<pid>.txt."""
    runtime.native_stderr_captured = lambda: _captured_in(directory / f"native-stderr-{os.getpid()}.txt")


def main() -> None:
    if os.environ.get("TFLMT_PROBE_DIR"):
        keep_native_stderr_on_crash(Path(os.environ["TFLMT_PROBE_DIR"]))
    with open(sys.argv[1], "rb") as f:
        model_bytes = f.read()
    for line in sys.stdin:
        words = line.split()
        try:
            interpreter = Interpreter(model_bytes, arena_size=int(words[0]), guard="none")  # this is the guard
            if "invoke" in words[1:]:
                _invoke_with_zeros(interpreter, model_bytes)
            answer = "1"
        except InterpreterError as exc:  # (a damaged model's ModelError ends the worker: "could not load")
            answer = "0\t" + " ".join(str(exc).split())  # one line
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
