"""The rewrite: identity at init, frozen buffers, targets, losses, backprop paths."""

from __future__ import annotations

import numpy as np
import pytest

from graphs import relative_error
from lazy_tensorflow import tf  # only the tests marked tf touch it
from tflm_train.converter import ConversionError, ConvertConfig, OptimizerConfig, convert, methods
from tflm_train.converter.layers import linear_target
from tflm_train.converter.matching import match_targets
from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import HEADER_BYTES, Header
from tflm_train.inspection import describe
from tflm_train.trainer import PlainModel, TrainableModel

# Every registered method (converter/methods/), so a new one is covered here.
METHODS = list(methods.names())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_converted_model_first_predicts_as_the_original(digits, method, kind):
    base = digits.float_model if kind == "float" else digits.int8_model
    original = PlainModel(base)
    converted = TrainableModel(convert(base, ConvertConfig(method=method, targets="last:3")).model)
    xs = digits.user_test.x[:40]
    want = np.stack([original.predict(x) for x in xs])
    got = np.stack([converted.predict(x) for x in xs])
    if not methods.get(method).exact_at_init and kind == "int8":
        # The new head is float32: the same weights, but its logits and
        # softmax are no longer rounded to int8.
        assert np.max(np.abs(got - want)) <= 0.1
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", METHODS)
def test_every_original_buffer_is_kept_byte_for_byte(digits, method):
    original = Model.from_bytes(digits.int8_model)
    converted = Model.from_bytes(convert(digits.int8_model, ConvertConfig(method=method)).model)
    for index, buffer in enumerate(original.raw.buffers):
        before = b"" if buffer.data is None else np.asarray(buffer.data, np.uint8).tobytes()
        after = converted.raw.buffers[index].data
        after = b"" if after is None else np.asarray(after, np.uint8).tobytes()
        assert before == after, f"buffer {index} changed"


def test_converted_model_layout(digits):
    result = convert(digits.int8_model, ConvertConfig(method="lora", r=4, targets="last:2"))
    model = Model.from_bytes(result.model)
    kinds = [model.op_type(op) for op in model.operators]
    assert kinds[0] == "TFLMT_STATE" and kinds[-1] == "TFLMT_OPTIMIZER"
    assert kinds.count("TFLMT_FULLY_CONNECTED") == 2 and "TFLMT_LOSS" in kinds
    # The deepest adapted layer computes no input gradient: one FC grad op each.
    grads = [op for op in model.operators if model.op_type(op) == "TFLMT_FULLY_CONNECTED_GRAD"]
    assert len(grads) == 2 and sum(len(model.outputs_of(op)) for op in grads) == 1
    meta = result.metadata
    n_in = len(Model.from_bytes(digits.int8_model).main.inputs)
    assert meta["inputs"] == {"x": [0], "target": n_in, "learning_rate": n_in + 1, "mode": n_in + 2, "state": n_in + 3}
    # LoRA rank 4 on 32->16 and 16->10: A and B for each.
    assert meta["state"]["param_count"] == 4 * (32 + 16) + 4 * (16 + 10)
    assert meta["state"]["bytes"] == HEADER_BYTES + 4 * meta["state"]["param_count"] * 2


def residual_model():
    """h feeds both a dense layer and the ADD after it: its gradient comes in two parts."""
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((6,))
    h = tf.keras.layers.Dense(8, name="d1")(inputs)
    r = tf.keras.layers.Add()([h, tf.keras.layers.Dense(8, name="d2")(h)])
    outputs = tf.keras.layers.Dense(3, name="d3")(r)
    return tf.keras.Model(inputs, outputs)


@pytest.mark.tf
def test_everything_after_the_forward_pass_is_a_mode_gated_op():
    """Inference (mode 0) runs no backward work: every op tflm-train appends
    after the forward pass is one of ours, and ours check the mode."""
    base = to_tflite(residual_model())
    config = ConvertConfig(method="lora", r=2, targets="d1", loss="mse", optimizer=OptimizerConfig(accumulate=2))
    result = convert(base, config)
    model = Model.from_bytes(result.model)
    first, end = result.metadata["forward_ops"]
    appended = [model.op_type(op) for op in model.operators[end:]]
    assert "TFLMT_ADD_GRADS" in appended
    assert all(kind.startswith("TFLMT_") for kind in appended), appended

    # The summed gradient is right: compare with TensorFlow.
    trainable = TrainableModel(result.model)
    initial = trainable.save_state()
    x = np.random.default_rng(2).normal(size=6).astype(np.float32)
    target = np.array([0.5, -1.0, 2.0], np.float32)
    trainable.train_step(x, target, 0.1)
    state = trainable.save_state()
    count = Header.unpack(state).param_count
    got = np.frombuffer(state, np.float32, count=count, offset=HEADER_BYTES + 4 * count)
    fully_connected = [i for i, op in enumerate(Model.from_bytes(base).operators)
                       if Model.from_bytes(base).op_type(op) == "FULLY_CONNECTED"]
    layers = {n: linear_target(Model.from_bytes(base), match_targets(Model.from_bytes(base), n, fully_connected, "FC")[0])
              for n in ("d1", "d2", "d3")}
    params = np.frombuffer(initial, np.float32, count=count, offset=HEADER_BYTES)
    lora_a, lora_b = tf.Variable(params[:12].reshape(2, 6)), tf.Variable(params[12:].reshape(8, 2))

    def dense(name, v):
        layer = layers[name]
        bias = layer.bias_real if layer.bias_real is not None else 0.0
        return tf.matmul(v, layer.weights_real, transpose_b=True) + bias

    with tf.GradientTape() as tape:
        xt = tf.constant(x[None])
        h = dense("d1", xt) + tf.matmul(tf.matmul(xt, lora_a, transpose_b=True), lora_b, transpose_b=True)
        y = dense("d3", h + dense("d2", h))
        loss = tf.reduce_mean((y - target[None]) ** 2)
    want = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, [lora_a, lora_b])])
    assert relative_error(got, want) < 1e-4


def test_targets_by_index_name_and_last(digits):
    model = Model.from_bytes(digits.int8_model)
    fc = [i for i, op in enumerate(model.operators) if model.op_type(op) == "FULLY_CONNECTED"]
    by_index = convert(digits.int8_model, ConvertConfig(targets=str(fc[0]))).metadata["adapted"]
    assert [a["index"] for a in by_index] == [fc[0]]
    by_name = convert(digits.int8_model, ConvertConfig(targets="dense_2")).metadata["adapted"]
    assert len(by_name) == 1 and "dense_2" in by_name[0]["name"]
    last = convert(digits.int8_model, ConvertConfig(targets="last:3")).metadata["adapted"]
    assert [a["index"] for a in last] == fc
    with pytest.raises(ConversionError, match="no FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D layer is named 'conv9'"):
        convert(digits.int8_model, ConvertConfig(targets="conv9"))
    with pytest.raises(ConversionError, match="is not a FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D layer"):
        convert(digits.int8_model, ConvertConfig(targets=str(len(model.operators) - 1)))


def test_explicit_targets_are_honored_by_every_method(digits):
    assert len(convert(digits.int8_model, ConvertConfig(method="sparse")).metadata["adapted"]) == 3  # default: all
    assert len(convert(digits.int8_model, ConvertConfig(method="sparse", targets="last:2")).metadata["adapted"]) == 2
    head = convert(digits.int8_model, ConvertConfig(method="head", targets="last:2"))
    assert head.metadata["adapted"][0]["index"] == 2  # head replaces the last of the given layers


def test_layers_sharing_a_name_get_unique_names(digits):
    """Fused batch norms can give several layers the same short name; the
    adapters and state tensors must not collide, and name#index selects one."""
    model = Model.from_bytes(digits.int8_model)
    fc = [i for i, op in enumerate(model.operators) if model.op_type(op) == "FULLY_CONNECTED"]
    for index in fc:
        for t in model.outputs_of(model.operators[index]) + model.inputs_of(model.operators[index])[1:]:
            if t >= 0:
                model.tensors[t].name = b"model/bn/batchnorm/add_1"
    same_names = model.to_bytes()
    result = convert(same_names, ConvertConfig(method="sparse"))
    names = [a["name"] for a in result.metadata["adapted"]]
    assert names == [f"batchnorm/add_1#{i}" for i in fc]
    tensor_names = [t["name"] for t in result.metadata["state"]["tensors"]]
    assert len(set(tensor_names)) == len(tensor_names)
    assert [e["name"] for e in describe(same_names)["layers"] if e["adaptable"]] == names  # inspect says the same
    picked = convert(same_names, ConvertConfig(method="bias", targets=f"batchnorm/add_1#{fc[1]}"))
    assert [a["index"] for a in picked.metadata["adapted"]] == [fc[1]]


@pytest.mark.tf
def test_default_loss_fits_the_output(digits):
    assert convert(digits.int8_model, ConvertConfig()).metadata["loss"] == "ce"
    assert convert(keras_tflite(output="linear"), ConvertConfig()).metadata["loss"] == "mse"
    assert convert(keras_tflite(output="sigmoid"), ConvertConfig()).metadata["loss"] == "bce"


def test_already_converted_model_is_refused(digits):
    once = convert(digits.int8_model, ConvertConfig()).model
    with pytest.raises(ConversionError, match="already converted"):
        convert(once, ConvertConfig())


@pytest.mark.tf
def test_unsupported_op_on_the_backprop_path_is_named():
    inputs = tf.keras.Input((6,))
    hidden = tf.keras.layers.Dense(8, name="first")(inputs)
    leaky = tf.keras.layers.LeakyReLU(0.1)(hidden)  # LEAKY_RELU: no gradient yet
    outputs = tf.keras.layers.Dense(3, name="last")(leaky)
    model = to_tflite(tf.keras.Model(inputs, outputs))
    with pytest.raises(ConversionError, match=r"operator \d+ \(LEAKY_RELU\) lies between the adapted layers and the loss"):
        convert(model, ConvertConfig(targets="first"))
    convert(model, ConvertConfig(targets="last"))  # nothing unsupported behind the last layer


# ---- backprop through standalone ops, checked against TensorFlow ---------------------------------
def path_model():
    """FC -> ADD(+RELU6) -> RESHAPE -> TANH -> RESHAPE -> FC -> LOGISTIC -> FC -> SOFTMAX."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((12,))
    a = tf.keras.layers.Dense(16, name="d1")(inputs)
    b = tf.keras.layers.Dense(16, name="d2")(inputs)
    s = tf.keras.layers.Activation("relu6")(tf.keras.layers.Add()([a, b]))
    t = tf.keras.layers.Reshape((4, 4))(s)
    t = tf.keras.layers.Activation("tanh")(t)
    t = tf.keras.layers.Reshape((16,))(t)
    u = tf.keras.layers.Activation("sigmoid")(tf.keras.layers.Dense(16, name="d4")(t))
    outputs = tf.keras.layers.Softmax()(tf.keras.layers.Dense(5, name="d5")(u))
    return tf.keras.Model(inputs, outputs)


@pytest.mark.tf
def test_gradients_through_standalone_ops_match_tensorflow():
    keras_model = path_model()
    base = to_tflite(keras_model)
    model = Model.from_bytes(base)
    kinds = {model.op_type(op) for op in model.operators}
    assert {"ADD", "RESHAPE", "TANH", "LOGISTIC", "SOFTMAX"} <= kinds, kinds
    # accumulate=2: after one sample the raw gradient is still in the state.
    config = ConvertConfig(method="lora", r=2, targets="d1", loss="mse", optimizer=OptimizerConfig(accumulate=2))
    result = convert(base, config)
    trainable = TrainableModel(result.model)
    initial = trainable.save_state()
    rng = np.random.default_rng(0)
    x = rng.normal(size=12).astype(np.float32)
    target = np.eye(5, dtype=np.float32)[2]
    trainable.train_step(x, target, 0.1)
    state = trainable.save_state()
    count = Header.unpack(state).param_count
    got = np.frombuffer(state, np.float32, count=count, offset=HEADER_BYTES + 4 * count)

    fully_connected = [i for i, op in enumerate(model.operators) if model.op_type(op) == "FULLY_CONNECTED"]
    weights = {}
    for name in ("d1", "d2", "d4", "d5"):
        [index] = match_targets(model, name, fully_connected, "FULLY_CONNECTED")
        layer = linear_target(model, index)
        bias = layer.bias_real if layer.bias_real is not None else np.zeros(layer.units, np.float32)
        weights[name] = (tf.constant(layer.weights_real), tf.constant(bias))
    params = np.frombuffer(initial, np.float32, count=count, offset=HEADER_BYTES)
    lora_a = tf.Variable(params[: 2 * 12].reshape(2, 12))
    lora_b = tf.Variable(params[2 * 12 :].reshape(16, 2))
    with tf.GradientTape() as tape:
        xt = tf.constant(x[None])

        def dense(name, h):
            return tf.matmul(h, weights[name][0], transpose_b=True) + weights[name][1]

        a = dense("d1", xt) + tf.matmul(tf.matmul(xt, lora_a, transpose_b=True), lora_b, transpose_b=True)
        s = tf.nn.relu6(a + dense("d2", xt))
        t = tf.reshape(tf.tanh(tf.reshape(s, (1, 4, 4))), (1, 16))
        u = tf.sigmoid(dense("d4", t))
        y = tf.nn.softmax(dense("d5", u))
        loss = tf.reduce_mean((y - target[None]) ** 2)
    want = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, [lora_a, lora_b])])
    assert np.abs(want).max() > 0
    assert relative_error(got, want) < 1e-4


@pytest.mark.tf
def test_int8_model_with_float_io_trains_through_quantize_and_dequantize():
    base = to_tflite(path_model(), int8=True, float_io=True)
    model = Model.from_bytes(base)
    kinds = [model.op_type(op) for op in model.operators]
    assert kinds[0] == "QUANTIZE" and kinds[-1] == "DEQUANTIZE"
    # mse on the output: the gradient enters through DEQUANTIZE and SOFTMAX.
    trainable = TrainableModel(convert(base, ConvertConfig(method="lora", targets="d4,d5", loss="mse")).model)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(16, 12)).astype(np.float32)
    targets = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 16)]
    before = np.mean([trainable.evaluate_loss(x, t) for x, t in zip(xs, targets)])
    for _ in range(30):
        for x, t in zip(xs, targets):
            trainable.train_step(x, t, 2.0)
    after = np.mean([trainable.evaluate_loss(x, t) for x, t in zip(xs, targets)])
    # Less than the float model reaches (0.05): the int8 logits saturate at the
    # range calibrated for the untrained model, [-0.84, 0.36] here.
    assert after < 0.9 * before


# ---- helpers ---------------------------------------------------------------------------------
def to_tflite(keras_model, int8: bool = False, float_io: bool = False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if int8:
        shape = keras_model.inputs[0].shape[1:]
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(50):
                yield [rng.normal(size=(1, *shape)).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not float_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def keras_tflite(output: str) -> bytes:
    inputs = tf.keras.Input((6,))
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    outputs = tf.keras.layers.Dense(4, activation=None if output == "linear" else output)(hidden)
    return to_tflite(tf.keras.Model(inputs, outputs))
