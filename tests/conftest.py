import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

from dataclasses import dataclass

import pytest

# Markers (registered in pyproject.toml) for tests that need an optional
# package: a selected test whose package is missing is an error, never a skip.
OPTIONAL_PACKAGES = {
    "tf": ("tensorflow", 'pip install -e ".[tf]"'),
    "wakeword": ("pymicro_wakeword", "pip install pymicro-wakeword==2.5.0"),
    "fleet": ("mlflow", 'pip install -e ".[fleet]"'),
    "federated": ("flwr", 'pip install -e ".[federated]"'),
}


@pytest.hookimpl(trylast=True)  # after -m has deselected
def pytest_collection_modifyitems(config, items):
    for marker, (package, install) in OPTIONAL_PACKAGES.items():
        needing = [item.nodeid for item in items if item.get_closest_marker(marker)]
        if needing and importlib.util.find_spec(package) is None:
            raise pytest.UsageError(
                f"{len(needing)} selected tests (e.g. {needing[0]}) are marked '{marker}' and need {package}, "
                f"which is not installed: {install}, or deselect them with -m 'not {marker}'"
            )


@pytest.fixture(autouse=True)
def _tensorflow_only_in_tf_tests(request):
    """A test not marked `tf` must run without TensorFlow: fail one that
    imports it (detectable while no earlier test has imported it)."""
    loaded_before = "tensorflow" in sys.modules
    yield
    if not loaded_before and "tensorflow" in sys.modules and not request.node.get_closest_marker("tf"):
        pytest.fail("imported TensorFlow but is not marked @pytest.mark.tf", pytrace=False)


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
