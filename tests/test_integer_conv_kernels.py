"""Integer training through convolutions (`convert --arithmetic int8 --method
bias` with CONV_2D / DEPTHWISE_CONV_2D targets; converter/integer_conv.py,
tflm_ops/kernels/conv_int_grad.cc): the converted model first predicts the
original bytes, its integer gradients match TensorFlow's (tf.GradientTape)
within a stated tolerance, and training reaches float training's accuracy
with the same data, sample order and schedule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tflm_train.converter import ops
from tflm_train.converter.config import ConvertConfig
from tflm_train.converter.convert import convert
from tflm_train.converter.model_ir import Model
from tflm_train.converter.state_format import (
    Header,
    dequantized_parameters,
    integer_gradients,
)

from tflm_train import fitting
from tflm_train.data import load_npz
from tflm_train.trainer import PlainModel, TrainableModel, quantize

ROOT = Path(__file__).resolve().parents[1]
MOTIONS = ROOT / "tflm_train/examples/basic_motions"
BIAS_ALL = ConvertConfig(method="bias", targets="last:3", arithmetic="int8")


def _data(model, name: str):
    return fitting.prepare(model, load_npz(MOTIONS / f"{name}.npz"), fitting.task_of(model), name)


@pytest.fixture(scope="module")
def motions() -> tuple[bytes, object]:
    base = (MOTIONS / "model_int8.tflite").read_bytes()
    return base, convert(base, BIAS_ALL)


# ---- conversion -------------------------------------------------------------------------------
def test_conv_biases_train_as_int16_deltas_and_first_predict_the_original(motions):
    base, result = motions
    tensors = result.metadata["state"]["tensors"]
    assert [t["role"] for t in tensors] == ["bias_delta"] * 3
    assert [t["shape"] for t in tensors] == [[16], [32], [4]]  # conv_1, conv_2, logits
    assert all(t["dtype"] == "int16" and t["scale"] > 0 for t in tensors)
    assert [a["op"] for a in result.metadata["adapted"]] == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    model = Model.from_bytes(result.model)
    kinds = [model.op_type(op) for op in model.operators]
    assert kinds.count(ops.CONV_INT) == 2 and kinds.count(ops.CONV_INT_GRAD) == 2
    assert kinds.count(ops.POOL_INT_GRAD) == 2  # MEAN and MAX_POOL_2D
    original, trainable = PlainModel(base), TrainableModel(result.model)
    x, _ = _data(trainable, "user_test")
    for sample in x:
        assert np.array_equal(trainable.predict(sample), original.predict(sample))


def test_lora_on_a_conv_layer_is_refused_in_one_line(tmp_path):
    out = tmp_path / "out.tflite"
    result = subprocess.run(
        [sys.executable, "-m", "tflm_train.cli", "convert", str(MOTIONS / "model_int8.tflite"), "-o", str(out),
         "--arithmetic", "int8", "--method", "lora", "--targets", "sequential_1/conv_2_1"], capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "conv layers train with --method bias" in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_conv_layer_that_only_passes_the_gradient_keeps_its_stock_operator():
    base = (MOTIONS / "model_int8.tflite").read_bytes()
    names = [a["name"] for a in convert(base, BIAS_ALL).metadata["adapted"]]
    result = convert(base, ConvertConfig(method="bias", targets=f"{names[0]},{names[2]}", arithmetic="int8"))
    model = Model.from_bytes(result.model)
    kinds = [model.op_type(op) for op in model.operators]
    assert kinds.count(ops.CONV_INT) == 1 and kinds.count("CONV_2D") == 1  # conv_2 stays stock
    assert kinds.count(ops.CONV_INT_GRAD) == 2  # ...but its input gradient reaches conv_1


# ---- against TensorFlow -----------------------------------------------------------------------
def gradient_probe(converted: bytes) -> tuple[bytes, list[int]]:
    """The converted model without its optimizer (the accumulators keep the
    step's gradients) and with every int8 activation of the forward pass as
    an extra output (TensorFlow is fed them, straight through)."""
    model = Model.from_bytes(converted)
    model.main.operators = [op for op in model.operators if model.op_type(op) != ops.SGD_INT]
    forward = [op for op in model.operators if not model.op_type(op).startswith("TFLMT_")
               or model.op_type(op) in (ops.CONV_INT, ops.FULLY_CONNECTED_INT)]
    extra = sorted({t for op in forward for t in model.outputs_of(op) if model.dtype(t) == np.int8}
                   | {t for op in forward for t in model.inputs_of(op)[:1] if t >= 0 and model.dtype(t) == np.int8})
    extra = [t for t in extra if t not in list(model.main.outputs)]
    model.main.outputs = list(model.main.outputs) + extra
    return model.sealed_bytes(), extra


def _real(model: Model, tensor: int, values: np.ndarray) -> np.ndarray:
    q = model.quant(tensor)
    return ((values.astype(np.float64) - int(q.zero_point[0])) * float(q.scale[0])).astype(np.float32)


def tensorflow_gradients(base: bytes, meta: dict, params: np.ndarray, ints: dict[int, np.ndarray],
                         label: int) -> np.ndarray:
    """dLoss/d(bias deltas) in float: every operator from the deepest trained
    layer to the logits rebuilt in TensorFlow on the int8 model's dequantized
    weights, each fed the integer forward pass: its output takes the value of
    the int8 output (straight through) and its ReLU mask, so the comparison
    measures the integer backward pass alone."""
    import tensorflow as tf
    from tf_reference import PADDING, _conv
    from tflm_train.converter.layers import linear_target

    model = Model.from_bytes(base)
    deltas = {}
    variables = []
    for t in meta["state"]["tensors"]:
        span = slice(t["offset"], t["offset"] + int(np.prod(t["shape"])))
        variables.append(tf.Variable(params[span].astype(np.float32)))
        deltas[t["layer"]] = variables[-1]
    names = {a["index"]: a["name"] for a in meta["adapted"]}
    first = min(names)
    logits = model.inputs_of(model.operators[-1])[0]  # the input of the final SOFTMAX
    values = {}

    def value(tensor):
        if tensor not in values:
            values[tensor] = tf.constant(_real(model, tensor, ints[tensor]).reshape(model.shape(tensor)))
        return values[tensor]

    with tf.GradientTape() as tape:
        for index in range(first, len(model.operators)):
            op = model.operators[index]
            kind, x, y = model.op_type(op), model.inputs_of(op)[0], model.outputs_of(op)[0]
            if kind in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
                t = linear_target(model, index)
                if kind == "FULLY_CONNECTED":
                    z = tf.matmul(tf.reshape(value(x), [-1, t.in_features]), t.weights_real, transpose_b=True)
                else:
                    z = _conv(t.layer, value(x), tf.constant(t.weights_real), PADDING[op.builtinOptions.padding])
                z = z + t.bias_real
                if names.get(index) in deltas:
                    z = z + deltas[names[index]]
                z = tf.reshape(z, model.shape(y))
                if t.activation:
                    z = z * tf.cast(ints[y].reshape(model.shape(y)) > int(model.quant(y).zero_point[0]), tf.float32)
            elif kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
                o = op.builtinOptions
                pool = tf.nn.max_pool2d if kind == "MAX_POOL_2D" else tf.nn.avg_pool2d
                z = pool(value(x), (o.filterHeight, o.filterWidth), (o.strideH, o.strideW), PADDING[o.padding])
            elif kind == "MEAN":
                z = tf.reduce_mean(value(x), axis=[1, 2], keepdims=bool(op.builtinOptions.keepDims))
            elif kind in ("RESHAPE", "SQUEEZE"):
                z = tf.reshape(value(x), model.shape(y))
            elif kind == "SOFTMAX":
                break
            else:
                raise NotImplementedError(kind)
            real = _real(model, y, ints[y]).reshape(model.shape(y))
            values[y] = z + tf.stop_gradient(real - z)  # the integer forward's value, z's gradient
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            np.array([label]), tf.reshape(values[logits], [1, -1]))
    grads = tape.gradient(loss, variables)
    flat = np.zeros(params.size, np.float32)
    for t, g in zip(meta["state"]["tensors"], grads):
        flat[t["offset"] : t["offset"] + int(np.prod(t["shape"]))] = np.asarray(g).ravel()
    return flat


# Per sample, the whole gradient's error below this fraction of its norm (plus
# the floor of tests/test_integer_training.py for vanishing gradients). What
# remains: int16 activation gradients (15 bits per tensor) through four
# backward ops, the Q15 loss gradient, the Q14 weight-scale ratios, and a
# bias step of 1/256 output step rounding the accumulators.
GRADIENT_TOLERANCE = 0.01
GRADIENT_FLOOR = 1e-3


def integer_step_gradients(converted: bytes, meta: dict, state: bytes, samples, labels):
    """The integer kernels' gradients (real units) and activations, one sample at a time."""
    probe_bytes, extra = gradient_probe(converted)
    probe = TrainableModel(probe_bytes)
    first_extra = len(Model.from_bytes(probe_bytes).main.outputs) - len(extra)
    for x, label in zip(samples, labels):
        probe.load_state(state)
        probe.train_step(x, int(label), 0.0)
        live = probe._live_state()
        header = Header.unpack(live)
        accumulators = integer_gradients(live, header).astype(np.float64)
        got = np.zeros_like(accumulators)
        for t in meta["state"]["tensors"]:
            span = slice(t["offset"], t["offset"] + int(np.prod(t["shape"])))
            got[span] = accumulators[span] * t["scale"] * 2.0**-8  # accumulator units: s_p * 2^-8
        ints = {tensor: probe.interpreter.get_output(first_extra + k) for k, tensor in enumerate(extra)}
        ints[int(Model.from_bytes(probe_bytes).main.inputs[0])] = quantize(x[None], probe.input_details)
        yield got, ints


def _check_gradients(base: bytes, converted: bytes, meta: dict, x, y, warmup: int, lr: float) -> list[float]:
    model = TrainableModel(converted)
    for i in range(warmup):  # move the biases away from their start first
        model.train_step(x[i], int(y[i]), lr)
    state = model.save_state()
    params = dequantized_parameters(state, Header.unpack(state), meta["state"]["tensors"])
    errors = []
    for got, ints in integer_step_gradients(converted, meta, state, x[warmup:], y[warmup:]):
        label = int(y[warmup + len(errors)])
        want = tensorflow_gradients(base, meta, params, ints, label)
        error = np.linalg.norm(got - want)
        assert error <= GRADIENT_TOLERANCE * np.linalg.norm(want) + GRADIENT_FLOOR, (len(errors), error, np.linalg.norm(want))
        errors.append(error / max(np.linalg.norm(want), 1e-12))
    return errors


@pytest.mark.tf
def test_basic_motions_integer_gradients_match_tensorflow(motions):
    """Through FULLY_CONNECTED, MEAN, CONV_2D, MAX_POOL_2D into conv_1's bias."""
    base, result = motions
    x, y = _data(TrainableModel(result.model), "user_train")
    errors = _check_gradients(base, result.model, result.metadata, x, y, warmup=6, lr=0.03)
    assert len(errors) == 6 and np.median(errors) < 0.002, errors


@pytest.mark.tf
def test_depthwise_integer_gradients_match_tensorflow():
    """DS-CNN's last depthwise block: DEPTHWISE_CONV_2D, CONV_2D (1x1),
    AVERAGE_POOL_2D over the whole map, RESHAPE, FULLY_CONNECTED."""
    import cnn_models

    built = cnn_models.ds_cnn_s()
    result = convert(built.int8_model, BIAS_ALL)
    assert [a["op"] for a in result.metadata["adapted"]] == ["DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    x, y = built.sample_data(8, seed=5)
    errors = _check_gradients(built.int8_model, result.model, result.metadata, x, y.astype(int), warmup=4, lr=0.05)
    assert np.median(errors) < 0.002, errors


# ---- malformed models: one clear refusal, never a crash (in a child process) -------------------
def _mutated_motions(mutate) -> bytes:
    model = Model.from_bytes(convert((MOTIONS / "model_int8.tflite").read_bytes(), BIAS_ALL).model)
    mutate(model)
    return model.sealed_bytes()  # edited, checksum recomputed: reaches the kernels


def _first(model: Model, op_type: str):
    return next(op for op in model.operators if model.op_type(op) == op_type)


def _truncate_options(op_type: str):
    def mutate(model):
        op = _first(model, op_type)
        op.customOptions = list(op.customOptions)[:-4]
    return mutate


def _geometry_off_by_one(model):  # two samples where the tensors hold one
    op = _first(model, ops.CONV_INT_GRAD)
    blob = bytearray(op.customOptions)
    blob[5:9] = (int.from_bytes(blob[5:9], "little") + 1).to_bytes(4, "little")
    op.customOptions = list(blob)


def _drop_pool_x(model):
    op = next(op for op in model.operators if model.op_type(op) == ops.POOL_INT_GRAD and int(op.inputs[2]) >= 0)
    inputs = [int(t) for t in op.inputs]
    inputs[2] = -1
    op.inputs = inputs


@pytest.mark.parametrize("mutate, pattern", [
    (_truncate_options(ops.CONV_INT), r"TFLMT_CONV_INT: malformed options"),
    (_truncate_options(ops.CONV_INT_GRAD), r"TFLMT_CONV_INT_GRAD: malformed options"),
    (_truncate_options(ops.POOL_INT_GRAD), r"TFLMT_POOL_INT_GRAD: malformed options"),
    (_geometry_off_by_one, r"TFLMT_CONV_INT_GRAD: dy holds 1600 values, expected 3200"),
    (_drop_pool_x, r"TFLMT_POOL_INT_GRAD: a max pool reads its input x"),
], ids=["conv_options", "conv_grad_options", "pool_grad_options", "conv_grad_geometry", "max_pool_without_x"])
def test_malformed_integer_conv_ops_are_refused(mutate, pattern, tmp_path):
    from test_kernel_robustness import assert_refused

    assert_refused(_mutated_motions(mutate), tmp_path, pattern)
