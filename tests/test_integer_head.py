"""Integer head training (`convert --arithmetic int8 --method head`): the
model's last FULLY_CONNECTED trains all its weights and biases as int16
deltas, each tensor with its own scale, over the frozen int8 layer (W + dW,
b + db; exact at the start). Bit for bit against tests/int_reference.py,
accuracy against float head training, merge, refusals. The gradients against
TensorFlow: tests/test_integer_training.py::test_integer_gradients_match_tensorflow[head]."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import int_reference as ref
from tflm_train import fitting
from tflm_train.converter.config import ConvertConfig
from tflm_train.converter.convert import convert
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.merge import merge
from tflm_train.converter.state_format import Header, integer_gradients, integer_parameters
from tflm_train.data import load_npz
from tflm_train.trainer import PlainModel, TrainableModel, quantize

DIGITS = Path(__file__).resolve().parents[1] / "tflm_train/examples/digits"
CLASSES = fitting.Task("accuracy", classes=10)


def _base() -> bytes:
    return (DIGITS / "model_int8.tflite").read_bytes()


def _data(model, name: str):
    return fitting.prepare(model, load_npz(DIGITS / f"{name}.npz"), fitting.task_of(model), name)


def test_head_trains_int16_deltas_of_the_last_layer_and_starts_exact():
    result = convert(_base(), ConvertConfig(method="head", arithmetic="int8"))
    tensors = {t["role"]: t for t in result.metadata["state"]["tensors"]}
    assert set(tensors) == {"weight_delta", "bias_delta"}
    assert tensors["weight_delta"]["shape"] == [10, 16] and tensors["bias_delta"]["shape"] == [10]
    assert all(t["dtype"] == "int16" and t["scale"] > 0 for t in tensors.values())
    assert tensors["weight_delta"]["scale"] != tensors["bias_delta"]["scale"]  # a scale per tensor
    assert result.metadata["state"]["param_count"] == 170
    model, original = TrainableModel(result.model), PlainModel(_base())
    x, _ = _data(model, "user_test")
    for sample in x[:30]:
        assert np.array_equal(model.predict(sample), original.predict(sample))


def test_head_steps_are_bit_exact_with_the_reference():
    converted = convert(_base(), ConvertConfig(method="head", arithmetic="int8", seed=4)).model
    model, graph = TrainableModel(converted), ref.IntegerGraph(converted)
    x, y = _data(model, "user_train")
    state = model.save_state()
    for step in range(24):
        expected, loss_bits = graph.step(state, quantize(x[step][None], model.input_details), int(y[step]), 0.05)
        loss = model.train_step(x[step], int(y[step]), 0.05)
        state = model.save_state()
        header = Header.unpack(state)
        assert struct.pack("<f", loss) == struct.pack("<I", loss_bits), f"loss differs at step {step}"
        assert np.array_equal(integer_parameters(state, header), integer_parameters(expected, header)), step
        assert not integer_gradients(state, header).any()
    assert np.count_nonzero(integer_parameters(state, header)) > 0.5 * header.param_count


def test_integer_head_is_within_a_point_of_float_head_and_merges():
    base = _base()
    before = fitting.evaluate(PlainModel(base), *_data(PlainModel(base), "user_test"), CLASSES)
    accuracy, models = {}, {}
    for arithmetic in ("float", "int8"):
        result = convert(base, ConvertConfig(method="head", arithmetic=arithmetic))
        model = TrainableModel(result.model)
        task = fitting.task_of(model)
        fitting.fit(model, *_data(model, "user_train"), task, 8, 0.02, seed=0)
        accuracy[arithmetic] = fitting.evaluate(model, *_data(model, "user_test"), task)
        models[arithmetic] = (result.model, model)
    assert accuracy["float"] > before + 0.1  # the schedule does adapt the model
    assert accuracy["int8"] >= accuracy["float"] - 0.01, accuracy
    converted, model = models["int8"]
    merged = PlainModel(merge(converted, model.save_state()))
    assert abs(fitting.evaluate(merged, *_data(merged, "user_test"), CLASSES) - accuracy["int8"]) < 0.02


@pytest.mark.parametrize("options", [dict(head_mode="append"), dict(classes=5), dict(targets="last:2")])
def test_head_options_beyond_the_last_layer_in_place_are_refused(options):
    with pytest.raises(ConversionError, match="--method head"):
        convert(_base(), ConvertConfig(method="head", arithmetic="int8", **options))


def test_cli_converts_an_integer_head(tmp_path):
    out = tmp_path / "head.tflite"
    done = subprocess.run(
        [sys.executable, "-m", "tflm_train.cli", "convert", str(DIGITS / "model_int8.tflite"), "-o", str(out),
         "--arithmetic", "int8", "--method", "head"], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert TrainableModel(out.read_bytes()).info.raw["config"]["method"] == "head"
