"""Worker for tflm_train.memory: reads arena sizes, one per line, and answers
"1" (the model allocates in that many bytes) or "0<TAB>why not" per line.
A line "<size> invoke" also invokes the model once, every input zero.

It runs in its own process because this TFLM build can crash while planning
memory (see tflm_train/memory.py); the parent tells a crash from an answer.
"""

import sys

import numpy as np

from tflm_train.converter.model_ir import Model
from tflm_train.runtime import Interpreter, InterpreterError


def _invoke_with_zeros(interpreter: Interpreter, model_bytes: bytes) -> None:
    model = Model.from_bytes(model_bytes)
    for index in range(len(model.main.inputs if model.main.inputs is not None else [])):
        details = interpreter.input_details(index)
        interpreter.set_input(index, np.zeros(details["shape"], details["dtype"]))
    interpreter.invoke()


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        model_bytes = f.read()
    for line in sys.stdin:
        words = line.split()
        try:
            interpreter = Interpreter(model_bytes, arena_size=int(words[0]))
            if "invoke" in words[1:]:
                _invoke_with_zeros(interpreter, model_bytes)
            answer = "1"
        except InterpreterError as exc:
            answer = "0\t" + " ".join(str(exc).split())  # one line
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
