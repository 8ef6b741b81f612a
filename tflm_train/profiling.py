"""Per-operator time of an interpreter's invocations (host only, for the benchmark).

The kernel plugin can time every kernel an interpreter calls, TFLM's builtin
ones and ours (tflm_ops/port/wheel/port_wheel.cc, WrapForProfiling): switched
on before an interpreter is built, it wraps that interpreter's registrations
with a steady_clock timer around the unchanged kernel. Interpreters built
while it is off are not touched. A training step then splits into:

  forward       TFLM's builtin kernels, our forward kernels, the loss
  backward      our gradient kernels (*_GRAD, ADD_GRADS, POOL_GRAD, ...)
  optimizer     TFLMT_OPTIMIZER (the update and its finiteness guard), or
                TFLMT_SGD_INT (integer training)
  bookkeeping   TFLMT_STATE (the state's checks and counters)

and what the interpreter spends around the kernels is the invocation's wall
time minus their sum (it includes the timer's own cost, ~50 ns per kernel).
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from tflm_train import plugin

PARTS = ("forward", "backward", "optimizer", "bookkeeping")
_BACKWARD = ("_GRAD", "TFLMT_ADD_GRADS")
# The float update, and the integer one of convert --arithmetic int8.
_OPTIMIZERS = ("TFLMT_OPTIMIZER", "TFLMT_SGD_INT")


def part_of(op_name: str) -> str:
    """Which part of a training step an operator belongs to."""
    if op_name == "TFLMT_STATE":
        return "bookkeeping"
    if op_name in _OPTIMIZERS:
        return "optimizer"
    if op_name.endswith(_BACKWARD[0]) or op_name == _BACKWARD[1]:
        return "backward"
    return "forward"


def _library():
    lib = plugin.library()
    lib.tflmt_profile_custom_name.restype = ctypes.c_char_p
    lib.tflmt_profile_ns.restype = ctypes.c_ulonglong
    lib.tflmt_profile_calls.restype = ctypes.c_ulonglong
    return lib


@contextlib.contextmanager
def profiled_interpreters() -> Iterator[None]:
    """Interpreters built inside this block are timed per kernel."""
    lib = _library()
    lib.tflmt_profile_enable(1)
    try:
        yield
    finally:
        lib.tflmt_profile_enable(0)


def _builtin_names() -> dict[int, str]:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def read_counters() -> dict[str, tuple[int, int]]:
    """Op name -> (total ns, calls) since the last clear."""
    lib = _library()
    names = _builtin_names()
    out: dict[str, tuple[int, int]] = {}
    for slot in range(lib.tflmt_profile_slots()):
        calls = lib.tflmt_profile_calls(slot)
        if not calls:
            continue
        custom = lib.tflmt_profile_custom_name(slot)
        name = custom.decode() if custom else names.get(lib.tflmt_profile_builtin(slot), "BUILTIN")
        ns, n = out.get(name, (0, 0))
        out[name] = (ns + lib.tflmt_profile_ns(slot), n + calls)
    return out


def clear_counters() -> None:
    _library().tflmt_profile_clear()


@dataclass
class StepSplit:
    """Medians over the timed steps, in microseconds (a median, not a mean:
    one step preempted by another process must not move the numbers)."""

    wall_us: float  # the whole step as the caller sees it (inputs written, Invoke)
    parts_us: dict[str, float]  # forward / backward / optimizer / bookkeeping
    interpreter_us: float  # wall minus the kernels: dispatch, input writes, timers
    kernels_us: float  # the sum of the kernels
    by_op_us: dict[str, float]

    def share(self, part: str) -> float:
        return self.parts_us[part] / self.wall_us


def split_step(step: Callable[[], None], steps: int) -> StepSplit:
    """Runs `step` (write inputs + Invoke of an interpreter built inside
    profiled_interpreters) `steps` times after a warm-up; each step's kernel
    times are read after it (outside its timing) and split by part."""
    lib = _library()
    slots = lib.tflmt_profile_slots()
    step()
    names = read_counters_names(slots)
    counters = np.zeros((steps + 1, slots), np.uint64)
    walls = np.zeros(steps)
    buffer_of = lambda row: counters[row].ctypes.data_as(ctypes.POINTER(ctypes.c_ulonglong))  # noqa: E731
    lib.tflmt_profile_read(buffer_of(0), slots)
    for i in range(steps):
        start = time.perf_counter_ns()
        step()
        walls[i] = time.perf_counter_ns() - start
        lib.tflmt_profile_read(buffer_of(i + 1), slots)
    per_step = np.diff(counters.astype(np.int64), axis=0) / 1e3  # [steps, slots] us
    walls /= 1e3
    by_op: dict[str, np.ndarray] = {}
    for slot, name in names.items():
        by_op[name] = by_op.get(name, 0) + per_step[:, slot]
    parts = {part: np.zeros(steps) for part in PARTS}
    for name, values in by_op.items():
        parts[part_of(name)] = parts[part_of(name)] + values
    kernels = sum(parts.values())
    return StepSplit(
        wall_us=float(np.median(walls)),
        parts_us={part: float(np.median(values)) for part, values in parts.items()},
        interpreter_us=float(np.median(walls - kernels)),
        kernels_us=float(np.median(kernels)),
        by_op_us={name: float(np.median(values)) for name, values in by_op.items() if values.any()},
    )


def read_counters_names(slots: int) -> dict[int, str]:
    """Slot -> op name, for the slots that have run."""
    lib = _library()
    builtin = _builtin_names()
    out = {}
    for slot in range(slots):
        if not lib.tflmt_profile_calls(slot):
            continue
        custom = lib.tflmt_profile_custom_name(slot)
        out[slot] = custom.decode() if custom else builtin.get(lib.tflmt_profile_builtin(slot), "BUILTIN")
    return out


__all__ = ["PARTS", "StepSplit", "clear_counters", "part_of", "profiled_interpreters", "read_counters", "read_counters_names", "split_step"]
