"""TensorFlow's results for the kernel and training tests, checked in.

make_golden.py (needs TensorFlow) computes, for every case of the kernel tests
and the digits training tests, the inputs and what TensorFlow gives for them
(outputs, tf.GradientTape gradients, parameters after Keras optimizer steps)
and writes them to <group>.npz here, with models.npz: a Keras-built .tflite
that tests convert (DS-CNN-S int8 from tests/cnn_models.py). The tests read those files, so they run
without TensorFlow; test_golden_vs_tensorflow.py (marked `tf`) regenerates
every file in memory and checks that the checked-in one still matches.

A file holds flat keys "<case>::<array>"; `load` gives {case: {array: value}}.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEPARATOR = "::"


def path_of(group: str) -> Path:
    return HERE / f"{group}.npz"


def flatten(cases: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{case}{SEPARATOR}{name}": np.asarray(value) for case, arrays in cases.items() for name, value in arrays.items()}


@functools.lru_cache(maxsize=None)
def load(group: str) -> dict[str, dict[str, np.ndarray]]:
    """Every case of one golden file, in the order it was written."""
    cases: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path_of(group), allow_pickle=False) as archive:
        for key in archive.files:
            case, name = key.split(SEPARATOR)
            cases.setdefault(case, {})[name] = archive[key]
    return cases


def case_ids(group: str, kind: str) -> list[str]:
    """The ids of one test's cases ("<kind>/<id>" in the file), for parametrize."""
    prefix = kind + "/"
    return [case[len(prefix) :] for case in load(group) if case.startswith(prefix)]


def case(group: str, kind: str, case_id: str) -> dict[str, np.ndarray]:
    return load(group)[f"{kind}/{case_id}"]


def model(name: str) -> bytes:
    """A checked-in .tflite that TensorFlow built (models.npz), e.g. "ds_cnn_s_int8"."""
    return load("models")[f"model/{name}"]["tflite"].tobytes()
