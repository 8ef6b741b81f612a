import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

from dataclasses import dataclass

import pytest


@dataclass
class DigitsExample:
    float_model: bytes
    int8_model: bytes
    user_train: object
    user_test: object
    base_test: object


@pytest.fixture(scope="session")
def digits() -> DigitsExample:
    """The bundled example: digit classifier models and a new writer's data."""
    from tflm_train.data import load_npz
    from tflm_train.demo import example_dir

    root = example_dir()
    return DigitsExample(
        float_model=(root / "model_float.tflite").read_bytes(),
        int8_model=(root / "model_int8.tflite").read_bytes(),
        user_train=load_npz(root / "user_train.npz"),
        user_test=load_npz(root / "user_test.npz"),
        base_test=load_npz(root / "base_test.npz"),
    )
