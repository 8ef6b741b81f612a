"""Measured memory: the smallest tensor arena a model runs in.

Found by creating real interpreters (the tflite-micro x86 reference build)
with shrinking arenas until AllocateTensors fails: TFLM plans every tensor,
scratch buffer and persistent buffer (our training state included) there,
so an interpreter that allocates can invoke. The number is for this 64-bit
host build; a 32-bit microcontroller needs somewhat less (smaller pointers
and tensor structs), never more.

The probes run in a worker process: this TFLM build crashes in its memory
planner (GreedyMemoryPlanner::CalculateOffsetsIfNeeded) for some arenas just
too small to plan in, instead of failing cleanly. A crash counts as "does not
fit" and the worker is restarted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from tflm_train.runtime import InterpreterError

ALIGNMENT = 16
_LARGEST = 256 * 1024 * 1024


class _Prober:
    """A worker process answering "does the model allocate in N bytes?"."""

    def __init__(self, model_bytes: bytes):
        handle, self.path = tempfile.mkstemp(suffix=".tflite")
        with os.fdopen(handle, "wb") as f:
            f.write(model_bytes)
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tflm_train._arena_probe", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def fits(self, arena: int) -> bool:
        for _ in range(2):
            if self.process is None or self.process.poll() is not None:
                self.process = self._start()
            try:
                self.process.stdin.write(f"{arena}\n")
                self.process.stdin.flush()
                answer = self.process.stdout.readline().strip()
            except BrokenPipeError:
                answer = ""
            if answer in ("0", "1"):
                return answer == "1"
            self.process.wait()
            if self.process.returncode not in (None, 0) and self.process.returncode < 0:
                return False  # crashed in the planner: too small
        raise InterpreterError("the arena probe could not load the model")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
        os.unlink(self.path)


def smallest_arena(model_bytes: bytes) -> int:
    """Bytes of the smallest arena (to 16 bytes) the model allocates in."""
    prober = _Prober(model_bytes)
    try:
        high = 16 * 1024
        while not prober.fits(high):
            high *= 2
            if high > _LARGEST:
                raise InterpreterError("model does not fit a 256 MB arena")
        low = 0  # largest size known not to fit
        while high - low > ALIGNMENT:
            middle = (low + high) // 2 // ALIGNMENT * ALIGNMENT
            if middle <= low:
                break
            if prober.fits(middle):
                high = middle
            else:
                low = middle
        return high
    finally:
        prober.close()
