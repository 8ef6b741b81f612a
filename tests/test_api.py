"""The public Python API (tflm_train): the README example, types, errors."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

import tflm_train as tt
from tflm_train.converter import ops
from tflm_train.converter import methods
from tflm_train.converter.config import LOSSES
from tflm_train.data import DataError
from tflm_train.errors import TflmTrainError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs_and_learns():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(), "README.md (Python API)", "exec"), {"__name__": "readme_example"})
    printed = out.getvalue()
    before, after = (float(v) / 100 for v in re.search(r"new writer: ([\d.]+)% -> ([\d.]+)%", printed).groups())
    merged = float(re.search(r"merged model: ([\d.]+)%", printed).group(1)) / 100
    arena = int(re.search(r"training arena ([\d,]+) B", printed).group(1).replace(",", ""))
    # The demo's numbers (README "What the demo shows"): 58.5% -> 84.8%.
    assert after >= 0.80 and after - before >= 0.15, printed
    assert abs(merged - after) <= 0.02, printed
    assert 5_000 < arena < 20_000, printed
    assert "refused: classes is an option of method head, not of bias" in printed


def test_literal_names_match_the_registries():
    assert get_args(tt.MethodName) == methods.names()
    assert set(get_args(tt.OptimizerName)) == set(ops.OPTIMIZER_KINDS)
    assert get_args(tt.LossName) == LOSSES


def test_every_user_error_derives_from_one_base_class():
    from tflm_train.converter import ConversionError
    from tflm_train.converter.model_ir import ModelError
    from tflm_train.converter.state_format import StateError
    from tflm_train.errors import UserError
    from tflm_train.plugin import PluginError
    from tflm_train.runtime import InterpreterError, UnsupportedOpError

    for error in (ConversionError, ModelError, StateError, DataError, InterpreterError, UnsupportedOpError,
                  PluginError, UserError):
        assert issubclass(error, TflmTrainError), error
    assert tt.TflmTrainError is TflmTrainError
    # The old bases stay, for code that caught those.
    assert issubclass(ConversionError, ValueError) and issubclass(InterpreterError, RuntimeError)
    with pytest.raises(TflmTrainError, match="not a .tflite|flatbuffer|model"):
        tt.convert(b"not a model at all")


def test_fit_works_out_the_task_and_checks_the_data(digits):
    model = tt.TrainableModel(tt.convert(digits.int8_model, tt.ConvertConfig(method="bias")).model)
    x, y = digits.user_train.x[:16], digits.user_train.y[:16]
    result = tt.fit(model, x, y, epochs=2, learning_rate=0.02)
    assert result.steps == 32 and result.metric == "accuracy"
    assert 0.0 <= result.metric_after <= 1.0 and len(result.epoch_losses) == 2
    with pytest.raises(DataError, match="8 samples but y has 16"):
        tt.fit(model, x[:8], y)
    with pytest.raises(DataError):
        tt.fit(model, x, np.full(16, 10))  # label 10 of a 10-class model
    with pytest.raises(TflmTrainError, match="converted model"):
        tt.fit(tt.PlainModel(digits.int8_model), x, y)
    # A plain model with float targets: mean squared error against its output.
    plain = tt.PlainModel(digits.float_model)
    targets = np.stack([plain.predict(sample) for sample in x])
    assert tt.evaluate(plain, x, targets) < 1e-10
    assert tt.evaluate(plain, x, y) == pytest.approx(
        np.mean(targets.argmax(axis=1) == y)
    )


def test_merge_takes_a_trainable_model_as_its_state(digits):
    result = tt.convert(digits.float_model, tt.ConvertConfig(method="lora", targets="last:2"))
    model = tt.TrainableModel(result.model)
    tt.fit(model, digits.user_train.x[:8], digits.user_train.y[:8], epochs=1, learning_rate=0.05)
    assert tt.merge(result.model, model) == tt.merge(result.model, model.save_state())
    plain = tt.PlainModel(tt.merge(result.model, model))
    sample = digits.user_test.x[0]
    np.testing.assert_allclose(plain.predict(sample), model.predict(sample), atol=1e-5)
