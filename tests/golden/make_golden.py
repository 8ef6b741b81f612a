"""Writes the golden vectors: inputs and TensorFlow's answers for the kernel
and training tests.

    python tests/golden/make_golden.py            # rewrite every tests/golden/*.npz
    python tests/golden/make_golden.py kernels    # one group (see GROUPS)

Each kernel case draws its inputs from a fixed seed, computes what TensorFlow
gives for them (forward values, tf.GradientTape gradients) and stores both.
Each training case (golden/training_cases.py) converts the bundled digits
model and stores its initial parameters and the parameters after the same
20 steps in TensorFlow (tf_reference.ConvertedModel, Keras optimizers). Where a
TensorFlow gradient is taken at the output of a stock int8 TFLM kernel (an
activation mask), that stock output is computed here with the TFLM
interpreter and stored too; the test checks that the kernel still gives it.
Run this after changing a case; test_golden_vs_tensorflow.py fails while the
checked-in files and a fresh run disagree.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: graphs, golden

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import golden  # noqa: E402
from golden import training_cases  # noqa: E402
from graphs import PADDING, conv_geometry, int8_fully_connected_graph, stock_int8_conv  # noqa: E402
from tflm_train.converter import ops  # noqa: E402
from tflm_train.converter.layers import same_padding  # noqa: E402
from tflm_train.converter.model_ir import Quant  # noqa: E402

TRAIN = np.array([ops.Mode.TRAIN], np.int32)

TF_ACTIVATIONS = {
    ops.Activation.NONE: tf.identity,
    ops.Activation.RELU: tf.nn.relu,
    ops.Activation.RELU6: tf.nn.relu6,
    ops.Activation.RELU_N1_TO_1: lambda z: tf.clip_by_value(z, -1.0, 1.0),
    ops.Activation.TANH: tf.tanh,
    ops.Activation.LOGISTIC: tf.sigmoid,
}


def seed_of(text: str) -> int:
    """A stable seed per case (str hashes change between processes)."""
    return zlib.crc32(text.encode())


def away_from_kinks(rng, shape, scale=1.0):
    """Values not within 0.05 of 0, +-1 or 6, where clamps have kinks."""
    values = rng.normal(size=shape) * scale
    for kink in (0.0, 1.0, -1.0, 6.0):
        close = np.abs(values - kink) < 0.05
        values[close] += 0.1
    return values.astype(np.float32)


def parts_array(parts) -> np.ndarray:
    return np.array(list(parts), dtype="<U8")


def gradients(tape, y, variables: dict, keys, dy) -> dict[str, np.ndarray]:
    grads = tape.gradient(y, [variables[k] for k in keys], output_gradients=tf.constant(dy))
    return {f"grad_{k}": g.numpy() for k, g in zip(keys, grads)}


# ---- kernels: test_kernels_vs_tensorflow.py ---------------------------------------------------------
FC_CASES = [
    # (id, trainable parts, activation, batches)
    ("input-grad-only", (), ops.Activation.NONE, 1),
    ("input-grad-relu", (), ops.Activation.RELU, 3),
    ("bias", ("bias",), ops.Activation.RELU6, 2),
    ("weights-bias", ("weights", "bias"), ops.Activation.NONE, 2),
    ("lora", ("lora",), ops.Activation.RELU, 1),
    ("lora-bias-tanh", ("lora", "bias"), ops.Activation.TANH, 3),
    ("lora-batch", ("lora",), ops.Activation.RELU_N1_TO_1, 4),
]
FC_LORA_RANK, FC_LORA_SCALE = 3, 0.75


def fully_connected_case(name, parts, activation, batches):
    rng = np.random.default_rng(seed_of(name))
    in_features, units = 7, 5
    v = {
        "x": rng.normal(size=(batches, in_features)).astype(np.float32),
        "weights": rng.normal(size=(units, in_features)).astype(np.float32) * 0.5,
        "bias": rng.normal(size=units).astype(np.float32) * 0.1,
        "lora_A": rng.normal(size=(FC_LORA_RANK, in_features)).astype(np.float32) * 0.5,
        "lora_B": rng.normal(size=(units, FC_LORA_RANK)).astype(np.float32) * 0.5,
    }
    dy = rng.normal(size=(batches, units)).astype(np.float32)
    variables = {k: tf.Variable(val) for k, val in v.items()}
    with tf.GradientTape() as tape:
        z = tf.matmul(variables["x"], variables["weights"], transpose_b=True) + variables["bias"]
        if "lora" in parts:
            hidden = tf.matmul(variables["x"], variables["lora_A"], transpose_b=True)
            z = z + FC_LORA_SCALE * tf.matmul(hidden, variables["lora_B"], transpose_b=True)
        y = TF_ACTIVATIONS[activation](z)
    keys = ["x"] + [k for k in ("weights", "bias") if k in parts] + (["lora_A", "lora_B"] if "lora" in parts else [])
    return {**v, "dy": dy, "parts": parts_array(parts), "activation": np.int32(activation),
            "lora_rank": np.int32(FC_LORA_RANK), "lora_scale": np.float32(FC_LORA_SCALE),
            "y": y.numpy(), **gradients(tape, y, variables, keys, dy)}


def fully_connected_int8_case(activation):
    rng = np.random.default_rng(11)
    batches, in_features, units = 2, 9, 6
    x_quant, y_quant = Quant.of(0.05, -3), Quant.of(0.08, -20)
    w_scales = rng.uniform(0.005, 0.02, size=units).astype(np.float32)
    x_q = rng.integers(-128, 128, size=(batches, in_features)).astype(np.int8)
    w_q = rng.integers(-127, 128, size=(units, in_features)).astype(np.int8)
    bias_q = rng.integers(-500, 500, size=units).astype(np.int32)
    dy = rng.normal(size=(batches, units)).astype(np.float32)
    # The stock kernel's int8 output decides the mask TensorFlow's gradient is taken with.
    g, tx, tdy, tmode, ty, _ = int8_fully_connected_graph(x_q, w_q, w_scales, bias_q, x_quant, y_quant, activation, dy)
    y_stock = g.run({tx: x_q, tdy: dy, tmode: TRAIN})[ty]
    x_real = tf.Variable(0.05 * (x_q.astype(np.float32) + 3))
    w_real = tf.constant(w_q.astype(np.float32) * w_scales[:, None])
    y_real = 0.08 * (y_stock.astype(np.float32) + 20)
    mask = (y_real > 0).astype(np.float32) if activation else 1.0
    with tf.GradientTape() as tape:
        z = tf.matmul(x_real, w_real, transpose_b=True)
    dx = tape.gradient(z, x_real, output_gradients=tf.constant(dy * mask))
    return {"x_q": x_q, "w_q": w_q, "w_scales": w_scales, "bias_q": bias_q, "dy": dy,
            "x_quant": np.float32([0.05, -3]), "y_quant": np.float32([0.08, -20]),
            "activation": np.int32(activation), "y_stock": y_stock, "dx": dx.numpy()}


ACTIVATION_CASES = [ops.Activation.RELU, ops.Activation.RELU6, ops.Activation.RELU_N1_TO_1, ops.Activation.TANH, ops.Activation.LOGISTIC]
ACTIVATION_INT8_QUANT = {
    ops.Activation.RELU: (0.05, -128),
    ops.Activation.TANH: (1 / 128, 0),
    ops.Activation.LOGISTIC: (1 / 256, -128),
}


def activation_case(activation):
    rng = np.random.default_rng(int(activation))
    x = away_from_kinks(rng, (2, 11), scale=3.0)
    dy = rng.normal(size=x.shape).astype(np.float32)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = TF_ACTIVATIONS[activation](variable)
    dx = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    return {"x": x, "dy": dy, "y": y.numpy(), "dx": dx, "activation": np.int32(activation)}


def activation_int8_case(activation):
    """The derivative at the dequantized output, as TensorFlow gives it there."""
    rng = np.random.default_rng(100 + int(activation))
    scale, zero_point = ACTIVATION_INT8_QUANT[activation]
    y_q = rng.integers(-127, 127, size=(1, 40)).astype(np.int8)
    y_real = (scale * (y_q.astype(np.float64) - zero_point)).astype(np.float32)
    dy = rng.normal(size=y_q.shape).astype(np.float32)
    # Inputs whose activation is exactly y_real, so TF differentiates at that point.
    p = np.clip(y_real, 1e-6, 1 - 1e-6)
    x = {
        ops.Activation.RELU: np.where(y_real > 0, y_real, -1.0),
        ops.Activation.TANH: np.arctanh(np.clip(y_real, -0.999, 0.999)),
        ops.Activation.LOGISTIC: np.log(p / (1 - p)),
    }[activation].astype(np.float32)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = TF_ACTIVATIONS[activation](variable)
    dx = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    return {"y_q": y_q, "dy": dy, "dx": dx, "quant": np.float32([scale, zero_point]), "activation": np.int32(activation)}


def softmax_case(beta, quantized):
    rng = np.random.default_rng(int(beta * 10) + quantized)
    x = rng.normal(size=(3, 10)).astype(np.float32) * 2
    dy = rng.normal(size=x.shape).astype(np.float32)
    if quantized:  # TensorFlow's softmax gradient written at the dequantized output
        y_q = np.clip(np.round(tf.nn.softmax(beta * x).numpy() * 256) - 128, -128, 127).astype(np.int8)
        y_value = (y_q.astype(np.float32) + 128) / 256
        dx = beta * y_value * (dy - np.sum(dy * y_value, axis=-1, keepdims=True))
        y_feed = y_q
    else:
        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = tf.nn.softmax(beta * variable)
        dx = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
        y_feed = y.numpy()
    return {"y": y_feed, "dy": dy, "dx": dx, "beta": np.float32(beta)}


def loss_case(kind, batches):
    rng = np.random.default_rng(batches * 7 + len(kind))
    classes = 6
    logits = rng.normal(size=(batches, classes)).astype(np.float32) * 2
    if kind == "ce":
        target = rng.integers(0, classes, size=batches).astype(np.int32)
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    elif kind == "mse":
        target = rng.normal(size=logits.shape).astype(np.float32)
        loss_fn = tf.keras.losses.MeanSquaredError()
    else:
        target = rng.integers(0, 2, size=logits.shape).astype(np.float32)
        loss_fn = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = loss_fn(target, variable)
    return {"logits": logits, "target": target, "kind": np.array(kind), "loss": np.float32([loss.numpy()]),
            "grad": tape.gradient(loss, variable).numpy()}


def cross_entropy_int8_case():
    rng = np.random.default_rng(9)
    q = rng.integers(-128, 128, size=(1, 10)).astype(np.int8)
    real = (0.1 * (q.astype(np.float32) - 4)).astype(np.float32)
    variable = tf.Variable(real)
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([3]), variable)
    return {"logits_q": q, "quant": np.float32([0.1, 4]), "target": np.int32([3]), "loss": np.float32([loss.numpy()]),
            "grad": tape.gradient(loss, variable).numpy()}


def adapter_case(quantized):
    rng = np.random.default_rng(21 + quantized)
    batches, features, width = 2, 8, 3
    down = rng.normal(size=(width, features)).astype(np.float32) * 0.5
    down_bias = rng.normal(size=width).astype(np.float32) * 0.1
    up = rng.normal(size=(features, width)).astype(np.float32) * 0.5
    up_bias = rng.normal(size=features).astype(np.float32) * 0.1
    dy = rng.normal(size=(batches, features)).astype(np.float32)
    if quantized:
        x_feed = rng.integers(-100, 100, size=(batches, features)).astype(np.int8)
        x_real = (0.04 * (x_feed.astype(np.float32) + 10)).astype(np.float32)
    else:
        x_real = x_feed = away_from_kinks(rng, (batches, features))
    variables = [tf.Variable(v) for v in (x_real, down, down_bias, up, up_bias)]
    with tf.GradientTape() as tape:
        hidden = tf.nn.relu(tf.matmul(variables[0], variables[1], transpose_b=True) + variables[2])
        y = variables[0] + tf.matmul(hidden, variables[3], transpose_b=True) + variables[4]
    grads = [t.numpy() for t in tape.gradient(y, variables, output_gradients=tf.constant(dy))]
    # int8: TensorFlow's output quantized with the layer's own parameters.
    y_want = np.clip(np.round(y.numpy() / 0.04) - 10, -128, 127).astype(np.int8) if quantized else y.numpy()
    return {"x": x_feed, "down": down, "down_bias": down_bias, "up": up, "up_bias": up_bias, "dy": dy,
            "y": y_want, "dx": grads[0], "grad_params": np.concatenate([g.ravel() for g in grads[1:]])}


def kernels() -> dict[str, dict[str, np.ndarray]]:
    cases = {}
    for name, parts, activation, batches in FC_CASES:
        cases[f"fc/{name}"] = fully_connected_case(name, parts, activation, batches)
    for activation in (ops.Activation.NONE, ops.Activation.RELU):
        cases[f"fc_int8/{activation.name}"] = fully_connected_int8_case(activation)
    for activation in ACTIVATION_CASES:
        cases[f"activation/{activation.name}"] = activation_case(activation)
    for activation in ACTIVATION_INT8_QUANT:
        cases[f"activation_int8/{activation.name}"] = activation_int8_case(activation)
    for quantized in (False, True):
        for beta in (1.0, 0.6):
            cases[f"softmax/beta{beta}-{'int8' if quantized else 'float'}"] = softmax_case(beta, quantized)
    for batches in (1, 3):
        for kind in ("ce", "mse", "bce"):
            cases[f"loss/{kind}-batch{batches}"] = loss_case(kind, batches)
    cases["loss_int8/ce"] = cross_entropy_int8_case()
    for quantized in (False, True):
        cases[f"adapter/{'int8' if quantized else 'float'}"] = adapter_case(quantized)
    return cases


# ---- conv_kernels: test_conv_kernels_vs_tensorflow.py ------------------------------------------------
def tf_conv(kind, x, filt, layer, padding):
    """filt in TFLite layout; returns the convolution (no bias)."""
    strides = [1, *layer.stride, 1]
    if kind == ops.LinearKind.CONV_2D:
        kernel = tf.transpose(filt, [1, 2, 3, 0])
        if layer.dilation != (1, 1):
            # TensorFlow's CPU conv2d has no dilated gradient; atrous_conv2d
            # (space-to-batch) computes the same convolution and has one.
            assert layer.stride == (1, 1) and layer.dilation[0] == layer.dilation[1]
            return tf.nn.atrous_conv2d(x, kernel, layer.dilation[0], padding)
        return tf.nn.conv2d(x, kernel, strides, padding)
    k_h, k_w = layer.kernel
    dw = tf.reshape(filt, [k_h, k_w, layer.in_channels, layer.depth_multiplier])
    return tf.nn.depthwise_conv2d(x, dw, strides, padding, dilations=list(layer.dilation))


CONV, DW = ops.LinearKind.CONV_2D, ops.LinearKind.DEPTHWISE_CONV_2D
CONV_CASES = [
    # (id, kind, x shape, out_c, kernel, stride, dilation, padding, activation, parts)
    ("conv-input-only", CONV, (1, 7, 6, 3), 4, (3, 3), (1, 1), (1, 1), "SAME", 1, ()),
    ("conv-stride2-valid", CONV, (2, 9, 8, 2), 5, (3, 2), (2, 2), (1, 1), "VALID", 0, ("bias",)),
    ("conv-dilated", CONV, (1, 8, 8, 2), 3, (3, 3), (1, 1), (2, 2), "SAME", 3, ("weights", "bias")),
    ("conv-lora", CONV, (1, 6, 5, 4), 6, (3, 3), (2, 1), (1, 1), "SAME", 1, ("lora",)),
    ("conv-lora-bias-1x1", CONV, (2, 4, 4, 5), 3, (1, 1), (1, 1), (1, 1), "VALID", 0, ("lora", "bias")),
    ("dw-input-only", DW, (1, 7, 7, 3), 3, (3, 3), (2, 2), (1, 1), "SAME", 1, ()),
    ("dw-multiplier", DW, (1, 6, 5, 2), 6, (3, 2), (1, 1), (1, 1), "VALID", 3, ("bias",)),
    ("dw-dilated-weights", DW, (2, 8, 7, 3), 3, (3, 3), (1, 1), (2, 2), "SAME", 0, ("weights", "bias")),
    # TensorFlow's depthwise_conv2d needs equal strides; ours do not.
    ("dw-lora", DW, (1, 9, 6, 4), 8, (5, 3), (2, 2), (1, 1), "SAME", 1, ("lora",)),
]
CONV_LORA_RANK, CONV_LORA_SCALE = 2, 0.8
TF_ACT = {0: tf.identity, 1: tf.nn.relu, 3: tf.nn.relu6}


def conv_case(name, kind, x_shape, out_c, kernel, stride, dilation, padding, activation, parts):
    rng = np.random.default_rng(sum(map(ord, name)))
    layer = conv_geometry(kind, x_shape, out_c, kernel, stride, dilation, padding, activation)
    rank, scale = CONV_LORA_RANK, CONV_LORA_SCALE
    v = {
        "x": rng.normal(size=x_shape).astype(np.float32),
        "weights": (rng.normal(size=layer.weight_shape()) * 0.4).astype(np.float32),
        "bias": (rng.normal(size=out_c) * 0.1).astype(np.float32),
        "lora_A": (rng.normal(size=layer.lora_a_shape(rank)) * 0.4).astype(np.float32),
        "lora_B": (rng.normal(size=(out_c, rank)) * 0.4).astype(np.float32),
    }
    dy = rng.normal(size=(x_shape[0], *layer.out_size, out_c)).astype(np.float32)
    variables = {k: tf.Variable(val) for k, val in v.items()}
    with tf.GradientTape() as tape:
        filt = variables["weights"]
        if "lora" in parts and kind == DW:
            delta = scale * tf.matmul(variables["lora_B"], variables["lora_A"])  # [out_c, taps]
            filt = filt + tf.reshape(tf.transpose(delta), layer.weight_shape())
        z = tf_conv(kind, variables["x"], filt, layer, padding) + variables["bias"]
        if "lora" in parts and kind == CONV:
            hidden = tf_conv(kind, variables["x"], variables["lora_A"], dataclasses.replace(layer, out_channels=rank), padding)
            z = z + scale * tf.einsum("nhwr,or->nhwo", hidden, variables["lora_B"])
        y = TF_ACT[activation](z)
    keys = ["x"] + [k for k in ("weights", "bias") if k in parts] + (["lora_A", "lora_B"] if "lora" in parts else [])
    return {**v, "dy": dy, "kind": np.int32(kind), "out_c": np.int32(out_c), "kernel": np.int32(kernel),
            "stride": np.int32(stride), "dilation": np.int32(dilation), "padding": np.array(padding),
            "activation": np.int32(activation), "parts": parts_array(parts), "lora_rank": np.int32(rank),
            "lora_scale": np.float32(scale), "y": y.numpy(), **gradients(tape, y, variables, keys, dy)}


def conv_int8_case(kind):
    rng = np.random.default_rng(int(kind) + 40)
    x_shape, out_c, rank = (1, 8, 7, 4), 8, 2
    layer = conv_geometry(kind, x_shape, out_c, (3, 3), (2, 2), (1, 1), "SAME", activation=1)
    x_quant, y_quant = Quant.of(0.04, -7), Quant.of(0.06, -128)
    w_scales = rng.uniform(0.004, 0.02, size=out_c).astype(np.float32)
    x_q = rng.integers(-128, 128, size=x_shape).astype(np.int8)
    w_q = rng.integers(-127, 128, size=layer.weight_shape()).astype(np.int8)
    bias_q = rng.integers(-2000, 2000, size=out_c).astype(np.int32)
    y_stock = stock_int8_conv(kind, layer, "SAME", x_q, w_q, w_scales, bias_q, x_quant, y_quant)
    a = rng.normal(size=layer.lora_a_shape(rank)).astype(np.float32)
    dy = rng.normal(size=y_stock.shape).astype(np.float32)

    # Input gradient with the layer's own scales, and LoRA B's gradient (B = 0).
    axis = 0 if kind == CONV else 3
    x_real = tf.Variable(0.04 * (x_q.astype(np.float32) + 7))
    shape = [1] * 4
    shape[axis] = -1
    w_real = tf.constant(w_q.astype(np.float32) * w_scales.reshape(shape))
    mask = (0.06 * (y_stock.astype(np.float32) + 128) > 0).astype(np.float32)
    b_var = tf.Variable(np.zeros((out_c, rank), np.float32))
    with tf.GradientTape() as tape:
        z = tf_conv(kind, x_real, w_real, layer, "SAME")
        if kind == CONV:
            hidden = tf_conv(kind, x_real, tf.constant(a), dataclasses.replace(layer, out_channels=rank), "SAME")
            z = z + tf.einsum("nhwr,or->nhwo", hidden, b_var)
        else:
            z = z + tf_conv(kind, x_real, tf.reshape(tf.transpose(tf.matmul(b_var, a)), layer.weight_shape()), layer, "SAME")
    dx, db = tape.gradient(z, [x_real, b_var], output_gradients=tf.constant(dy * mask))
    return {"x_q": x_q, "w_q": w_q, "w_scales": w_scales, "bias_q": bias_q, "lora_A": a, "dy": dy,
            "x_quant": np.float32([0.04, -7]), "y_quant": np.float32([0.06, -128]), "lora_rank": np.int32(rank),
            "y_stock": y_stock, "dx": dx.numpy(), "grad_lora_B": db.numpy()}


def conv_kernels() -> dict[str, dict[str, np.ndarray]]:
    cases = {f"conv/{c[0]}": conv_case(*c) for c in CONV_CASES}
    for kind, name in ((CONV, "conv"), (DW, "depthwise")):
        cases[f"conv_int8/{name}"] = conv_int8_case(kind)
    return cases


# ---- shape_kernels: test_shape_kernels_vs_tensorflow.py ------------------------------------------------
POOL_GEOMETRY = [("VALID", (2, 2), (2, 2)), ("SAME", (3, 3), (2, 1)), ("SAME", (3, 2), (1, 1))]
POOL_QUANT = (0.05, -4)


def pool_case(kind, padding, kernel, stride, quantized):
    rng = np.random.default_rng(len(kind) * 10 + kernel[0] + stride[1] + quantized)
    x_shape = (2, 7, 6, 3)
    out_h, _ = same_padding(7, kernel[0], stride[0], 1, PADDING[padding])
    out_w, _ = same_padding(6, kernel[1], stride[1], 1, PADDING[padding])
    if quantized:
        x_q = rng.permutation(np.arange(-126, 126)).astype(np.int8).reshape(x_shape)  # 252 values, no ties
        x_real, feed = POOL_QUANT[0] * (x_q.astype(np.float32) - POOL_QUANT[1]), x_q
    else:
        x_real = rng.permutation(np.prod(x_shape)).astype(np.float32).reshape(x_shape) / 10  # no ties
        feed = x_real
    dy = rng.normal(size=(2, out_h, out_w, 3)).astype(np.float32)
    variable = tf.Variable(x_real)
    with tf.GradientTape() as tape:
        pool = tf.nn.avg_pool2d if kind == "average" else tf.nn.max_pool2d
        y = pool(variable, kernel, stride, padding)
    dx = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    return {"x": feed, "dy": dy, "dx": dx, "kind": np.array(kind), "padding": np.array(padding),
            "kernel": np.int32(kernel), "stride": np.int32(stride), "quant": np.float32(POOL_QUANT)}


def mean_case(axes, keep):
    rng = np.random.default_rng(sum(axes) + keep)
    x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = tf.reduce_mean(variable, axis=axes, keepdims=keep)
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    return {"dy": dy, "dx": dx, "axes": np.int32(axes), "keep": np.bool_(keep)}


def pad_case():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 5, 4, 2)).astype(np.float32)
    paddings = [[0, 0], [1, 2], [0, 1], [0, 0]]
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = tf.pad(variable, paddings)
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    return {"dy": dy, "dx": dx, "paddings": np.int32(paddings)}


def concatenation_case(axis):
    rng = np.random.default_rng(axis + 7)
    if axis % 4 == 3:
        parts = [rng.normal(size=(1, 3, 4, c)).astype(np.float32) for c in (2, 5, 1)]
    else:
        parts = [rng.normal(size=(1, h, 4, 2)).astype(np.float32) for h in (2, 3)]
    variables = [tf.Variable(p) for p in parts]
    with tf.GradientTape() as tape:
        y = tf.concat(variables, axis=axis)
    dy = rng.normal(size=y.shape).astype(np.float32)
    wants = [t.numpy() for t in tape.gradient(y, variables, output_gradients=tf.constant(dy))]
    return {"dy": dy, "axis": np.int32(axis), **{f"dx{i}": want for i, want in enumerate(wants)}}


BROADCAST_SHAPES = [((2, 3, 4), (4,)), ((1, 5, 1, 3), (1, 1, 6, 3)), ((3, 1), (1, 3))]


def broadcast_case(kind, a_shape, b_shape):
    rng = np.random.default_rng(len(kind) + len(a_shape) * 3 + len(b_shape))
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    va, vb = tf.Variable(a), tf.Variable(b)
    with tf.GradientTape() as tape:
        y = {"add": va + vb, "subtract": va - vb, "multiply": va * vb}[kind]
    dy = rng.normal(size=y.shape).astype(np.float32)
    da, db = (t.numpy() for t in tape.gradient(y, [va, vb], output_gradients=tf.constant(dy)))
    return {"a": a, "b": b, "dy": dy, "da": da, "db": db, "kind": np.array(kind)}


def broadcast_int8_case():
    rng = np.random.default_rng(5)
    other_q = rng.integers(-128, 128, size=(1, 4)).astype(np.int8)
    other = 0.02 * (other_q.astype(np.float32) - 3)
    a = rng.normal(size=(3, 4)).astype(np.float32)
    va = tf.Variable(a)
    with tf.GradientTape() as tape:
        y = va * other
    dy = rng.normal(size=(3, 4)).astype(np.float32)
    da = tape.gradient(y, va, output_gradients=tf.constant(dy)).numpy()
    return {"other_q": other_q, "quant": np.float32([0.02, 3]), "a_shape": np.int32(a.shape), "dy": dy, "da": da}


def shape_kernels() -> dict[str, dict[str, np.ndarray]]:
    cases = {}
    for quantized in (False, True):
        for padding, kernel, stride in POOL_GEOMETRY:
            for kind in ("average", "max"):
                name = f"{kind}-{padding}-k{kernel[0]}x{kernel[1]}-s{stride[0]}x{stride[1]}-{'int8' if quantized else 'float'}"
                cases[f"pool/{name}"] = pool_case(kind, padding, kernel, stride, quantized)
    for axes, keep in (([1, 2], True), ([1, 2], False), ([3], False), ([0, 2], True)):
        cases[f"mean/axes{''.join(map(str, axes))}-{'keep' if keep else 'drop'}"] = mean_case(axes, keep)
    cases["pad/crop"] = pad_case()
    for axis in (3, 1, -1):
        cases[f"concatenation/axis{axis}"] = concatenation_case(axis)
    for a_shape, b_shape in BROADCAST_SHAPES:
        for kind in ("add", "subtract", "multiply"):
            shapes = f"{'x'.join(map(str, a_shape))}-by-{'x'.join(map(str, b_shape))}"
            cases[f"broadcast/{kind}-{shapes}"] = broadcast_case(kind, a_shape, b_shape)
    cases["broadcast_int8/multiply"] = broadcast_int8_case()
    return cases


# ---- training: test_training_vs_tensorflow.py ---------------------------------------------------------
def training_case(case, data) -> dict[str, np.ndarray]:
    """The converted digits model's initial parameters, and the same
    parameters after the case's steps with its Keras optimizer in TensorFlow."""
    from tf_reference import ConvertedModel
    from tflm_train.converter import convert
    from tflm_train.converter.state_format import Header, parameters
    from tflm_train.demo import example_dir
    from tflm_train.trainer import TrainableModel

    base = (example_dir() / "model_float.tflite").read_bytes()
    config = dataclasses.replace(case.config)  # convert must not see a shared instance
    result = convert(base, config)
    initial = TrainableModel(result.model).save_state()
    reference = ConvertedModel(base, result.metadata, parameters(initial, Header.unpack(initial)))
    start = reference.flat()
    optimizer = getattr(tf.keras.optimizers, case.keras_optimizer)(case.lr, **case.keras_args)
    xs, ys = data.x[:training_cases.STEPS], data.y[:training_cases.STEPS]
    reference.train(xs, ys, optimizer, accumulate=config.optimizer.accumulate, clip=config.optimizer.clip_norm)
    return {"initial": start, "trained": reference.flat()}


def training() -> dict[str, dict[str, np.ndarray]]:
    from tflm_train.data import load_npz
    from tflm_train.demo import example_dir

    data = load_npz(example_dir() / "user_train.npz")
    return {f"train/{name}": training_case(case, data) for name, case in training_cases.TRAINING_CASES.items()}


# ---- models: Keras-built models the memory, report and CLI tests convert ----------------------------------
def models() -> dict[str, dict[str, np.ndarray]]:
    """DS-CNN-S int8 (untrained, seeded; TFLiteConverter), as bytes."""
    import cnn_models

    return {"model/ds_cnn_s_int8": {"tflite": np.frombuffer(cnn_models.ds_cnn_s().int8_model, np.uint8)}}


GROUPS = {
    "kernels": kernels,
    "conv_kernels": conv_kernels,
    "shape_kernels": shape_kernels,
    "training": training,
    "models": models,
}


def generate(group: str) -> dict[str, np.ndarray]:
    """One golden file's arrays, as written to disk (flat keys)."""
    tf.keras.utils.set_random_seed(0)
    return golden.flatten(GROUPS[group]())


def main(argv: list[str]) -> None:
    for group in argv or list(GROUPS):
        arrays = generate(group)
        path = golden.path_of(group)
        np.savez_compressed(path, **arrays)
        print(f"{path}: {len(arrays)} arrays, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
