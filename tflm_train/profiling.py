"""Per-operator time of an interpreter's invocations (host only, for the benchmark).

The kernel plugin can time every kernel an interpreter calls, TFLM's builtin
ones and ours (tflm_ops/port/wheel/port_wheel.cc, WrapForProfiling): switched
on before an interpreter is built, it wraps that interpreter's registrations
with a steady_clock timer around the unchanged kernel. Interpreters built
while it is off are not touched. A training step then splits into:

  forward       TFLM's builtin kernels, our forward kernels, the loss
  backward      our gradient kernels (*_GRAD, ADD_GRADS, POOL_GRAD, ...)
  optimizer     TFLMT_OPTIMIZER (the update and its finiteness guard)
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

from tflm_train import plugin

PARTS = ("forward", "backward", "optimizer", "bookkeeping")
_BACKWARD = ("_GRAD", "TFLMT_ADD_GRADS")


def part_of(op_name: str) -> str:
    """Which part of a training step an operator belongs to."""
    if op_name == "TFLMT_STATE":
        return "bookkeeping"
    if op_name == "TFLMT_OPTIMIZER":
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
    """Median-free averages over `steps` timed invocations, in microseconds."""

    wall_us: float  # the whole step as the caller sees it (inputs written, Invoke)
    parts_us: dict[str, float]  # forward / backward / optimizer / bookkeeping
    interpreter_us: float  # wall minus the kernels: dispatch, input writes, timers
    by_op_us: dict[str, float]

    def share(self, part: str) -> float:
        return self.parts_us[part] / self.wall_us


def split_step(step: Callable[[], None], steps: int) -> StepSplit:
    """Runs `step` (write inputs + Invoke of an interpreter built inside
    profiled_interpreters) `steps` times after a warm-up, and splits its time."""
    step()
    clear_counters()
    start = time.perf_counter_ns()
    for _ in range(steps):
        step()
    wall_ns = time.perf_counter_ns() - start
    counters = read_counters()
    by_op = {name: ns / steps / 1e3 for name, (ns, _) in counters.items()}
    parts = dict.fromkeys(PARTS, 0.0)
    for name, us in by_op.items():
        parts[part_of(name)] += us
    wall = wall_ns / steps / 1e3
    return StepSplit(wall_us=wall, parts_us=parts, interpreter_us=wall - sum(parts.values()), by_op_us=by_op)


__all__ = ["PARTS", "StepSplit", "clear_counters", "part_of", "profiled_interpreters", "read_counters", "split_step"]
