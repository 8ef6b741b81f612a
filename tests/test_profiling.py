"""The benchmark's per-kernel timer (tflm_train/profiling.py, plugin side in
tflm_ops/port/wheel/port_wheel.cc): it splits a step by part, and leaves
interpreters built while it is off untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tflm_train.converter import ConvertConfig, convert
from tflm_train.profiling import clear_counters, part_of, profiled_interpreters, read_counters, split_step
from tflm_train.trainer import PlainModel, TrainableModel, quantize

DIGITS = Path(__file__).resolve().parents[1] / "tflm_train" / "examples" / "digits"


def _digits():
    data = np.load(DIGITS / "user_train.npz")
    return (DIGITS / "model_int8.tflite").read_bytes(), data["x"][0].astype(np.float32), int(data["y"][0])


def test_parts_of_a_step():
    assert part_of("TFLMT_STATE") == "bookkeeping"
    assert part_of("TFLMT_OPTIMIZER") == "optimizer" and part_of("TFLMT_SGD_INT") == "optimizer"
    assert part_of("TFLMT_FULLY_CONNECTED_INT_GRAD") == "backward"
    assert part_of("TFLMT_CONV_2D_GRAD") == "backward" and part_of("TFLMT_ADD_GRADS") == "backward"
    assert part_of("FULLY_CONNECTED") == "forward" and part_of("TFLMT_LOSS") == "forward"


def test_a_training_step_splits_into_its_parts_and_trains_the_same():
    base, x, y = _digits()
    converted = convert(base, ConvertConfig(method="sparse", sparse_weights="last:3")).model
    with profiled_interpreters():
        timed = TrainableModel(converted)
    plain = TrainableModel(converted)  # built with the timer off
    clear_counters()
    losses = [(timed.train_step(x, y, 0.05), plain.train_step(x, y, 0.05)) for _ in range(3)]
    assert all(a == b for a, b in losses)  # the wrapped kernels compute the same
    counters = read_counters()
    # Three steps of the timed interpreter only: every kernel ran 3 times.
    assert {name: calls for name, (_, calls) in counters.items()} == {
        "TFLMT_STATE": 3, "TFLMT_FULLY_CONNECTED": 9, "SOFTMAX": 3, "TFLMT_LOSS": 3,
        "TFLMT_FULLY_CONNECTED_GRAD": 9, "TFLMT_OPTIMIZER": 3}
    raw = timed.interpreter._interpreter
    feeds = [(quantize(x[None], timed.input_details), 0), (np.array([y], np.int32), timed._target),
             (np.array([0.0], np.float32), timed._learning_rate), (np.array([1], np.int32), timed._mode)]

    def step():
        for value, index in feeds:
            raw.set_input(value, index)
        raw.invoke()

    split = split_step(step, 20)
    assert all(split.parts_us[part] > 0 for part in ("forward", "backward", "optimizer", "bookkeeping"))
    assert split.kernels_us <= split.wall_us
    assert set(split.by_op_us) == set(counters)


def test_inference_of_an_unprofiled_interpreter_is_not_timed():
    base, x, _ = _digits()
    model = PlainModel(base)
    clear_counters()
    model.predict(x)
    assert read_counters() == {}
