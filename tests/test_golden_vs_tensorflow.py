"""The checked-in golden vectors are still what TensorFlow gives.

Regenerates every tests/golden/*.npz in memory with golden/make_golden.py
(TensorFlow, and the stock TFLM kernels for int8 masks) and compares it
with the file: the same cases and arrays, inputs bit for bit, TensorFlow's
answers within 1e-6 relative (ten times tighter than the kernel tests'
1e-5, so that a kernel within 1e-5 of the file is within 1.1e-5 of
TensorFlow). After an intended change to a case, run
`python tests/golden/make_golden.py`.
"""

from __future__ import annotations

import numpy as np
import pytest

import golden
from graphs import relative_error

GOLDEN_DRIFT = 1e-6


@pytest.fixture(scope="module")
def make_golden():
    from golden import make_golden

    return make_golden


def structure(model_bytes: bytes) -> list:
    """What the tests rely on in a model: its operators with their tensors' names, shapes and types."""
    from tflm_train.converter.model_ir import Model

    model = Model.from_bytes(model_bytes)
    describe = lambda t: None if t < 0 else (model.tensor_name(t), tuple(model.shape(t)), str(model.dtype(t)))
    return [(model.op_type(op), [describe(t) for t in model.inputs_of(op)], [describe(t) for t in model.outputs_of(op)])
            for op in model.operators]


@pytest.mark.tf
@pytest.mark.slow  # builds DS-CNN-S with Keras and converts it
def test_checked_in_models_match_a_fresh_build(make_golden):
    """The same graph as TensorFlow builds now; the bytes may differ between
    TensorFlow versions (the int8 calibration), the operators and shapes may not."""
    fresh = make_golden.generate("models")
    with np.load(golden.path_of("models"), allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(fresh)
        for key, want in fresh.items():
            assert structure(archive[key].tobytes()) == structure(want.tobytes()), key


@pytest.mark.tf
@pytest.mark.parametrize(
    "group", ["kernels", "conv_kernels", "shape_kernels", pytest.param("training", marks=pytest.mark.slow)]  # 40 s
)
def test_checked_in_golden_file_matches_tensorflow(make_golden, group):
    fresh = make_golden.generate(group)
    with np.load(golden.path_of(group), allow_pickle=False) as archive:
        stored = {key: archive[key] for key in archive.files}
    assert sorted(stored) == sorted(fresh), "cases differ: run python tests/golden/make_golden.py"
    for key, want in fresh.items():
        got = stored[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        if want.dtype.kind == "f" and want.size:
            assert relative_error(got, want) <= GOLDEN_DRIFT, key
        else:
            np.testing.assert_array_equal(got, want, err_msg=key)


def test_golden_files_stay_small():
    total = sum(path.stat().st_size for path in golden.HERE.glob("*.npz"))
    assert total < 512 * 1024, total
