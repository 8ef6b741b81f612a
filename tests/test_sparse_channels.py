"""Sparse update of a fraction of a layer's output channels (issue 17 item 4).

The chosen channels train as delta rows on top of the frozen filter
(tflm_ops/reference/channel_rows.h): parameters, gradients and optimizer
buffers are sized to those channels, so the measured training arena shrinks.
Checked here: the state and arena, gradients and updates against TensorFlow
(FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D), the merge, and the issue's
small-budget case: a 16 KB budget on a DS-CNN whose inference arena is about
13.5 KB, where training every bias would need 50 KB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphs import relative_error
from tflm_train.converter import ConversionError, ConvertConfig, OptimizerConfig, convert
from tflm_train.converter.merge import merge
from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import HEADER_BYTES, Header, parameters
from tflm_train.memory import smallest_arena, smallest_arena_within
from tflm_train.trainer import PlainModel, TrainableModel

DIGITS = Path(__file__).resolve().parents[1] / "tflm_train" / "examples" / "digits"
EIGHT_OF_32 = "0:1,4,9,12,20,25,30,31"


@pytest.fixture(scope="module")
def user_data():
    data = np.load(DIGITS / "user_train.npz")
    return data["x"].astype(np.float32), data["y"]


def _mean_loss(model, x, y) -> float:
    return float(np.mean([model.evaluate_loss(a, int(b)) for a, b in zip(x, y)]))


def test_channel_rows_shrink_the_state_and_the_arena(user_data):
    digits = (DIGITS / "model_int8.tflite").read_bytes()
    whole = convert(digits, ConvertConfig(method="sparse", targets="0,2", sparse_biases="2", sparse_weights="0"))
    some = convert(digits, ConvertConfig(method="sparse", targets="0,2", sparse_biases="2", sparse_channels=EIGHT_OF_32))
    tensors = {t["role"]: t for t in some.metadata["state"]["tensors"]}
    assert tensors["weight_rows"]["shape"] == [8, 64]  # 8 chosen channels of 32, rows of 64 inputs
    assert some.metadata["state"]["param_count"] == 8 * 64 + 10
    assert some.metadata["adapted"][0]["channels"] == [1, 4, 9, 12, 20, 25, 30, 31]
    # Parameters and gradients (SGD: no optimizer buffers) of 8 channels, not 32.
    assert smallest_arena(whole.model) - smallest_arena(some.model) >= 0.95 * 2 * 4 * 24 * 64
    x, y = user_data
    model = TrainableModel(some.model)
    # The frozen filter computes as before (delta rows start at 0).
    np.testing.assert_array_equal(model.predict(x[0]), PlainModel(digits).predict(x[0]))
    before = _mean_loss(model, x[:40], y[:40])
    for i in range(80):
        model.train_step(x[i % len(x)], int(y[i % len(x)]), 0.02)
    assert _mean_loss(model, x[:40], y[:40]) < 0.9 * before
    for bad, message in [("0:1,40", "32 output channels"), ("1:2", "not a target layer"), ("0", "INDEX:CHANNEL")]:
        with pytest.raises(ConversionError, match=message):
            convert(digits, ConvertConfig(method="sparse", targets="0,2", sparse_biases="2", sparse_channels=bad))
    with pytest.raises(ConversionError, match="whole weights and some channels"):
        convert(digits, ConvertConfig(method="sparse", targets="0", sparse_weights="0", sparse_channels="0:1"))


def test_cli_names_channels_by_hand(tmp_path):
    from test_cli import assert_user_error, run, run_json

    out = tmp_path / "channels.tflite"
    args = ["convert", str(DIGITS / "model_int8.tflite"), "-o", str(out), "--method", "sparse", "--targets", "0,2",
            "--sparse-biases", "2"]
    report = run_json(*args, "--sparse-channels", "0:3,7")
    assert out.exists() and report["adapted"][0]["channels"] == [3, 7] and report["trainable_params"] == 2 * 64 + 10
    out.unlink()
    assert_user_error(run(*args, "--sparse-channels", "0:99"), "has 32 output channels")
    assert not out.exists()
    assert_user_error(run(*args[:6], "--sparse-channels", "0:1", "--method", "bias"),
                      "--sparse-channels is an option of --method sparse")


@pytest.mark.tf
@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_fully_connected_channels_train_like_tensorflow(user_data, optimizer):
    """8 of the first layer's 32 channels and the last bias: 10 steps match
    TensorFlow's (tf.GradientTape on the frozen filter + delta rows at those
    channels, so only they move); the merged model predicts the trained one."""
    import tensorflow as tf

    import tf_reference

    base = (DIGITS / "model_float.tflite").read_bytes()
    config = ConvertConfig(method="sparse", targets="0,2", sparse_biases="2", sparse_channels=EIGHT_OF_32)
    if optimizer == "momentum":
        config.optimizer = OptimizerConfig(kind="momentum", momentum=0.9)
    result = convert(base, config)
    model = TrainableModel(result.model)
    initial = model.save_state()
    reference = tf_reference.ConvertedModel(base, result.metadata, parameters(initial, Header.unpack(initial)))
    xs, ys = user_data[0][:10], user_data[1][:10]
    for x, y in zip(xs, ys):
        model.train_step(x, int(y), 0.05)
    keras_optimizer = tf.keras.optimizers.SGD(0.05, momentum=0.9 if optimizer == "momentum" else 0.0)
    reference.train(xs, ys, keras_optimizer)
    state = model.save_state()
    trained = parameters(state, Header.unpack(state))
    assert relative_error(trained, parameters(initial, Header.unpack(initial))) > 1e-3  # it moved
    assert relative_error(trained, reference.flat()) < 1e-4
    merged = PlainModel(merge(result.model, state))
    for x in user_data[0][20:25]:
        np.testing.assert_allclose(merged.predict(x), model.predict(x), rtol=1e-4, atol=1e-5)


@pytest.mark.tf
def test_conv_and_depthwise_channel_gradients_match_tensorflow():
    """Half the channels of a CONV_2D 3x3, of a DEPTHWISE 3x3 and of a 1x1
    CONV_2D (tiny_conv, float): the accumulated gradient of the delta rows
    (and dx through them) equals TensorFlow's."""
    import cnn_models
    import tf_reference

    built = cnn_models.tiny_conv()
    base = built.float_model
    model_ir = Model.from_bytes(base)
    linear = [i for i, op in enumerate(model_ir.operators)
              if model_ir.op_type(op) in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")]
    conv_1, dw_1, conv_2 = linear[:3]
    channels = f"{conv_1}:0,3,5,6;{dw_1}:1,2,4,7;{conv_2}:0,2,5,8,9,11,12,15"
    result = convert(base, ConvertConfig(method="sparse", targets=f"{conv_1},{dw_1},{conv_2}", sparse_biases=str(conv_2),
                                         sparse_channels=channels, optimizer=OptimizerConfig(accumulate=2)))
    shapes = {t["layer"].split("/")[-1]: t["shape"] for t in result.metadata["state"]["tensors"]
              if t["role"] == "weight_rows"}
    assert sorted(map(tuple, shapes.values())) == [(4, 9), (4, 9), (8, 8)]  # 3x3x1, dw taps, 1x1x8
    trainable = TrainableModel(result.model)
    initial = trainable.save_state()
    x, y = built.sample_data(1, seed=3)
    trainable.train_step(x[0], int(y[0]), 0.1)  # accumulate=2: the gradient stays in the state
    state = trainable.save_state()
    count = Header.unpack(state).param_count
    got = np.frombuffer(state, np.float32, count=count, offset=HEADER_BYTES + 4 * count)
    reference = tf_reference.ConvertedModel(base, result.metadata, parameters(initial, Header.unpack(initial)))
    want = reference.flat(reference.gradients(lambda: reference.class_loss(x[0], int(y[0]))))
    assert np.abs(want).max() > 0
    assert relative_error(got, want) < 1e-4


@pytest.mark.tf
def test_16kb_budget_on_a_13_5kb_ds_cnn_is_accepted_with_a_useful_choice():
    """The issue's case: every bias of this DS-CNN needs a 50 KB arena, the
    last bias alone 15.3 KB; within 16,384 B the choice adds a quarter of the
    last layer's channels, and its trial lowers the held-out loss."""
    import cnn_models
    from tflm_train.sparse import _Trial, choose_sparse

    built = cnn_models.ds_cnn_small(trained=True, channels=38)
    base = built.int8_model
    assert 13_000 <= smallest_arena(base) <= 14_000  # the "13.5 KB-inference DS-CNN"
    budget = 16 * 1024
    # Every bias (the sparse default) does not allocate in 3x the budget (measured: 51,056 B).
    assert smallest_arena_within(convert(base, ConvertConfig(method="sparse")).model, 3 * budget) is None
    x, y = cnn_models.synthetic_data("ds_cnn_small", 96, seed=11)
    x = x + np.float32(0.3)  # the user's microphone: a level offset the base model never saw
    choice = choose_sparse(base, ConvertConfig(method="sparse"), budget, data=(x, y))
    assert choice.arena_bytes <= budget and smallest_arena(choice.result.model) == choice.arena_bytes
    assert choice.base_arena_bytes < budget
    assert choice.channel_layers or choice.weight_layers  # more than the last bias
    assert any(p.kind == "channels" and p.chosen for p in choice.parts)
    # The channels are those whose rows moved most in a trial of the whole weights.
    chosen = next(p for p in choice.parts if p.kind == "channels" and p.chosen)
    probe = convert(base, ConvertConfig(method="sparse", targets=str(chosen.index), sparse_weights=str(chosen.index)))
    movement = _Trial.of(x, y, 64, 0.01).channel_movement(probe, chosen.name, depthwise=False)
    assert movement.shape == (chosen.out_channels,)
    assert chosen.channels == sorted(np.argsort(-movement, kind="stable")[: len(chosen.channels)].tolist())
    assert choice.loss_after < choice.loss_before - 0.1  # measured 2.18 -> 1.95
    assert choice.accuracy_after > choice.accuracy_before  # measured 9% -> 44%
    # Training the chosen model on the data lowers its loss there too.
    model = TrainableModel(choice.result.model)
    before = _mean_loss(model, x, y)
    for _ in range(2):
        for a, b in zip(x, y):
            model.train_step(a, int(b), 0.01)
    assert _mean_loss(model, x, y) < before - 0.05
