"""Worker for tflm_train.memory: reads arena sizes, answers 1 (fits) or 0."""

import sys

from tflm_train.runtime import Interpreter, InterpreterError


def main() -> None:
    model_bytes = open(sys.argv[1], "rb").read()
    for line in sys.stdin:
        try:
            Interpreter(model_bytes, arena_size=int(line))
            fits = True
        except InterpreterError:
            fits = False
        sys.stdout.write("1\n" if fits else "0\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
