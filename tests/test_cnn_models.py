"""Convolutional models end to end: the reference TinyML architectures.

DS-CNN-S, MobileNetV1-0.25 (visual wake words), ResNet-8 and the FC
autoencoder, built with Keras in tests/cnn_models.py and converted to int8 by
TFLiteConverter, are converted by tflm-train and trained in the TFLM
interpreter. Gradients through whole float models (convolutions, depthwise,
pooling, MEAN, residual ADDs) are checked against TensorFlow running the same
graph (tests/tf_reference.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import cnn_models
from graphs import relative_error
from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import HEADER_BYTES, Header
from tflm_train.trainer import PlainModel, TrainableModel

pytestmark = pytest.mark.tf  # every model here is built with Keras


def linear_ops(model_bytes: bytes) -> list[int]:
    model = Model.from_bytes(model_bytes)
    kinds = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
    return [i for i, op in enumerate(model.operators) if model.op_type(op) in kinds]


def accumulated_gradient(result, built) -> tuple[np.ndarray, np.ndarray]:
    """One step with accumulate=2: the summed gradient stays in the state."""
    trainable = TrainableModel(result.model)
    initial = trainable.save_state()
    x, y = built.sample_data(1, seed=3)
    trainable.train_step(x[0], int(y[0]), 0.1)
    state = trainable.save_state()
    count = Header.unpack(state).param_count
    got = np.frombuffer(state, np.float32, count=count, offset=HEADER_BYTES + 4 * count)
    return got, np.frombuffer(initial, np.float32, count=count, offset=HEADER_BYTES)


# (builder, targets): LoRA targets reaching deep into each network, so the
# backward pass crosses every op type the model has.
GRADIENT_CASES = {
    "tiny_conv": (cnn_models.tiny_conv, lambda fc: f"{fc[0]}"),  # first conv: through DW, MAX_POOL, MEAN
    "ds_cnn_s": (cnn_models.ds_cnn_s, lambda fc: f"{fc[1]},{fc[4]}"),  # a depthwise and a pointwise
    "resnet8": (cnn_models.resnet8, lambda fc: f"{fc[0]}"),  # the stem: through every residual ADD
    "mobilenet_v1_025_vww": (cnn_models.mobilenet_v1_025_vww, lambda fc: f"{fc[-6]}"),  # strided depthwise region
}


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_whole_model_gradients_match_tensorflow(name):
    builder, targets = GRADIENT_CASES[name]
    built = builder()
    base = built.float_model
    # recompute="always": the backward ops make LoRA's hidden rows again
    # (test_memory.py checks that keeping them trains the same).
    config = ConvertConfig(
        method="lora", r=2, targets=targets(linear_ops(base)), optimizer=OptimizerConfig(accumulate=2),
        recompute="always",
    )
    result = convert(base, config)
    got, params = accumulated_gradient(result, built)
    count = got.size

    import tf_reference

    x, y = built.sample_data(1, seed=3)
    reference = tf_reference.ConvertedModel(base, result.metadata, params)
    want = reference.flat(reference.gradients(lambda: reference.class_loss(x[0], int(y[0]))))
    assert want.size == count
    assert np.abs(want).max() > 0
    assert relative_error(got, want) < 1e-4


# The other methods through a whole network: biases of a depthwise and a
# pointwise layer, a bottleneck adapter deep in the net, the head, and
# sparse (the bias of every layer).
METHOD_CASES = {
    "bias": lambda fc: ConvertConfig(method="bias", targets=f"{fc[1]},{fc[4]}"),
    "adapter": lambda fc: ConvertConfig(method="adapter", targets=f"{fc[2]}", recompute="always"),
    "head": lambda fc: ConvertConfig(method="head"),
    "sparse": lambda fc: ConvertConfig(method="sparse"),
}


@pytest.mark.parametrize("method", list(METHOD_CASES))
def test_other_methods_whole_model_gradients_match_tensorflow(method):
    built = cnn_models.ds_cnn_s()
    base = built.float_model
    config = METHOD_CASES[method](linear_ops(base))
    config.optimizer = OptimizerConfig(accumulate=2)
    result = convert(base, config)
    got, params = accumulated_gradient(result, built)

    import tf_reference

    x, y = built.sample_data(1, seed=3)
    reference = tf_reference.ConvertedModel(base, result.metadata, params)
    want = reference.flat(reference.gradients(lambda: reference.class_loss(x[0], int(y[0]))))
    assert np.abs(want).max() > 0
    assert relative_error(got, want) < 1e-4


MODELS = {
    "ds_cnn_s": cnn_models.ds_cnn_s,
    "mobilenet_v1_025_vww": cnn_models.mobilenet_v1_025_vww,
    "resnet8": cnn_models.resnet8,
    "tiny_conv": cnn_models.tiny_conv,
}


# Mean loss after 4 epochs over at most this fraction of before (measured
# ratios in brackets; bias moves least, LoRA and adapters on the smaller nets most).
LOSS_RATIO_AT_MOST = {
    ("ds_cnn_s", "lora"): 0.98,  # 0.961
    ("ds_cnn_s", "bias"): 0.96,  # 0.937
    ("ds_cnn_s", "adapter"): 0.93,  # 0.901
    ("mobilenet_v1_025_vww", "lora"): 0.3,  # 0.185
    ("mobilenet_v1_025_vww", "bias"): 0.98,  # 0.956
    ("mobilenet_v1_025_vww", "adapter"): 0.55,  # 0.403
    ("resnet8", "lora"): 0.8,  # 0.728
    ("resnet8", "bias"): 0.98,  # 0.956
    ("resnet8", "adapter"): 0.85,  # 0.798
    ("tiny_conv", "lora"): 0.2,  # 0.111
    ("tiny_conv", "bias"): 0.99,  # 0.974
    ("tiny_conv", "adapter"): 0.2,  # 0.087
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["lora", "bias", "adapter"])
def test_int8_cnn_converts_predicts_as_before_and_learns(name, method):
    built = MODELS[name](trained=True)
    base = built.int8_model
    result = convert(base, ConvertConfig(method=method, targets="last:3" if method != "adapter" else "last:2"))
    original, trainable = PlainModel(base), TrainableModel(result.model)
    x, y = built.sample_data(24, seed=11)
    for sample in x[:4]:
        np.testing.assert_array_equal(trainable.predict(sample), original.predict(sample))
    # A new task: labels permuted, so the base model is wrong on purpose.
    classes = int(built.num_outputs)
    labels = (y.astype(int) + 1) % classes
    before = np.mean([trainable.evaluate_loss(s, l) for s, l in zip(x, labels)])
    for _ in range(4):
        for s, l in zip(x, labels):
            trainable.train_step(s, l, 0.01)
    after = np.mean([trainable.evaluate_loss(s, l) for s, l in zip(x, labels)])
    assert after <= LOSS_RATIO_AT_MOST[name, method] * before, (before, after)


@pytest.mark.slow
def test_fc_autoencoder_int8_reconstruction_improves():
    built = cnn_models.fc_autoencoder(trained=True)
    trainable = TrainableModel(convert(built.int8_model, ConvertConfig(method="lora", targets="last:2")).model)
    assert trainable.info.loss == "mse"
    x = built.sample_inputs(16, seed=5)
    shifted = (x * 0.8 + 0.1).astype(np.float32)  # a machine that sounds a little different
    before = np.mean([trainable.evaluate_loss(s, s) for s in shifted])
    # lr 0.1: at 0.005 the loss moved by 0.08%, too little to hold a floor to.
    for _ in range(5):
        for s in shifted:
            trainable.train_step(s, s, 0.1)
    after = np.mean([trainable.evaluate_loss(s, s) for s in shifted])
    assert after <= 0.99 * before, (before, after)  # measured 0.983
