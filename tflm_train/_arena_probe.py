"""Worker for tflm_train.memory: reads arena sizes, one per line, and answers
"1" (the model allocates in that many bytes) or "0<TAB>why not" per line.

It runs in its own process because this TFLM build can crash while planning
memory (see tflm_train/memory.py); the parent tells a crash from an answer.
"""

import sys

from tflm_train.runtime import Interpreter, InterpreterError


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        model_bytes = f.read()
    for line in sys.stdin:
        try:
            Interpreter(model_bytes, arena_size=int(line))
            answer = "1"
        except InterpreterError as exc:
            answer = "0\t" + " ".join(str(exc).split())  # one line
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
