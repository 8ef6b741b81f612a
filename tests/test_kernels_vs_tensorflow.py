"""Every backward kernel, run in the TFLM interpreter, against tf.GradientTape.

Each test builds a tiny model around one of our ops, runs it in the
tflite-micro interpreter with our kernels, and compares forward values and
gradients with TensorFlow on the same inputs: within 1e-5 relative (float32).
Quantized cases compare against TensorFlow on the dequantized values, which
is what "backpropagating with the layer's own quantization parameters" means.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from graphs import Graph, relative_error, state_blob, state_grads
from tflm_train.converter import ops
from tflm_train.converter.model_ir import Quant

TOLERANCE = 1e-5
TRAIN = np.array([ops.Mode.TRAIN], np.int32)
INFER = np.array([ops.Mode.INFER], np.int32)

TF_ACTIVATIONS = {
    ops.Activation.NONE: tf.identity,
    ops.Activation.RELU: tf.nn.relu,
    ops.Activation.RELU6: tf.nn.relu6,
    ops.Activation.RELU_N1_TO_1: lambda z: tf.clip_by_value(z, -1.0, 1.0),
    ops.Activation.TANH: tf.tanh,
    ops.Activation.LOGISTIC: tf.sigmoid,
}


def away_from_kinks(rng, shape, scale=1.0):
    """Values not within 0.05 of 0, +-1 or 6, where clamps have kinks."""
    values = rng.normal(size=shape) * scale
    for kink in (0.0, 1.0, -1.0, 6.0):
        close = np.abs(values - kink) < 0.05
        values[close] += 0.1
    return values.astype(np.float32)


# ---- fully connected ------------------------------------------------------------------------
FC_CASES = [
    # (name, trainable parts, activation, batches)
    ("input-grad-only", (), ops.Activation.NONE, 1),
    ("input-grad-relu", (), ops.Activation.RELU, 3),
    ("bias", ("bias",), ops.Activation.RELU6, 2),
    ("weights-bias", ("weights", "bias"), ops.Activation.NONE, 2),
    ("lora", ("lora",), ops.Activation.RELU, 1),
    ("lora-bias-tanh", ("lora", "bias"), ops.Activation.TANH, 3),
    ("lora-batch", ("lora",), ops.Activation.RELU_N1_TO_1, 4),
]


@pytest.mark.parametrize("name,parts,activation,batches", FC_CASES, ids=[c[0] for c in FC_CASES])
def test_fully_connected_grad_float(name, parts, activation, batches):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    in_features, units, rank, scale = 7, 5, 3, 0.75
    x = rng.normal(size=(batches, in_features)).astype(np.float32)
    w = rng.normal(size=(units, in_features)).astype(np.float32) * 0.5
    b = rng.normal(size=units).astype(np.float32) * 0.1
    a = rng.normal(size=(rank, in_features)).astype(np.float32) * 0.5
    b_lora = rng.normal(size=(units, rank)).astype(np.float32) * 0.5
    dy = rng.normal(size=(batches, units)).astype(np.float32)

    params, offsets = [], {}

    def place(key, values):
        offsets[key] = sum(p.size for p in params)
        params.append(values.reshape(-1))

    if "weights" in parts:
        place("weights", w)
    if "bias" in parts:
        place("bias", b)
    if "lora" in parts:
        place("lora_A", a)
        place("lora_B", b_lora)
    flat = np.concatenate(params) if params else np.zeros(1, np.float32)
    layer = ops.LinearLayer.fully_connected(
        in_features,
        units,
        activation=activation,
        weight_offset=offsets.get("weights", -1),
        bias_offset=offsets.get("bias", -1),
        lora_rank=rank if "lora" in parts else 0,
        lora_a_offset=offsets.get("lora_A", -1),
        lora_b_offset=offsets.get("lora_B", -1),
        lora_scale=scale if "lora" in parts else 0.0,
    )

    g = Graph()
    tx = g.input("x", x.shape)
    tdy = g.input("dy", dy.shape)
    tmode = g.input("mode", [1], np.int32)
    tstate = g.state(flat)
    tw = -1 if "weights" in parts else g.const("w", w)
    tb = -1 if "bias" in parts else g.const("b", b)
    ty = g.output(g.tensor("y", [batches, units]))
    fwd_outputs = [ty]
    th = -1
    if "lora" in parts:
        th = g.tensor("h", [batches, rank])
        fwd_outputs.append(th)
    g.op(ops.FULLY_CONNECTED, [tx, tw, tb, tstate], fwd_outputs, layer.options())
    tdx = g.output(g.tensor("dx", x.shape))
    y_input = ty if activation != ops.Activation.NONE else -1
    g.op(ops.FULLY_CONNECTED_GRAD, [tdy, tx, y_input, tw, tstate if parts else -1, tmode, th], [tdx], layer.options())
    out = g.run({tx: x, tdy: dy, tmode: TRAIN, tstate: state_blob(flat)})

    variables = {k: tf.Variable(v) for k, v in {"x": x, "weights": w, "bias": b, "lora_A": a, "lora_B": b_lora}.items()}
    with tf.GradientTape() as tape:
        z = tf.matmul(variables["x"], variables["weights"], transpose_b=True) + variables["bias"]
        if "lora" in parts:
            hidden = tf.matmul(variables["x"], variables["lora_A"], transpose_b=True)
            z = z + scale * tf.matmul(hidden, variables["lora_B"], transpose_b=True)
        y = TF_ACTIVATIONS[activation](z)
    keys = ["x"] + [k for k in ("weights", "bias", "lora_A", "lora_B") if k in offsets]
    grads = dict(zip(keys, tape.gradient(y, [variables[k] for k in keys], output_gradients=tf.constant(dy))))

    assert relative_error(out[ty], y.numpy()) < TOLERANCE
    assert relative_error(out[tdx], grads["x"].numpy()) < TOLERANCE
    state_gradients = state_grads(out[tstate], flat.size) if parts else None
    for key in keys[1:]:
        got = state_gradients[offsets[key] : offsets[key] + grads[key].numpy().size]
        assert relative_error(got, grads[key].numpy().reshape(-1)) < TOLERANCE, key


def test_fully_connected_grad_skips_unless_training():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 6)).astype(np.float32)
    layer = ops.LinearLayer.fully_connected(6, 4, bias_offset=0)
    g = Graph()
    tx, tdy, tmode = g.input("x", [1, 6]), g.input("dy", [1, 4]), g.input("mode", [1], np.int32)
    tstate = g.state(np.zeros(4, np.float32))
    tdx = g.output(g.tensor("dx", [1, 6]))
    g.op(ops.FULLY_CONNECTED_GRAD, [tdy, tx, -1, g.const("w", w), tstate, tmode, -1], [tdx], layer.options())
    feeds = {tx: rng.normal(size=(1, 6)), tdy: np.ones((1, 4)), tstate: state_blob(np.zeros(4))}
    trained = g.run({**feeds, tmode: TRAIN})
    inferred = g.run({**feeds, tmode: INFER})
    assert np.abs(state_grads(trained[tstate], 4)).sum() > 0
    assert np.all(state_grads(inferred[tstate], 4) == 0)  # no backward work in inference


def _int8_fc_graph(x_q, w_q, w_scales, bias_q, x_quant, y_quant, activation, dy):
    """Stock int8 FULLY_CONNECTED forward, our gradient op backward."""
    batches, in_features = x_q.shape
    units = w_q.shape[0]
    g = Graph()
    tx = g.input("x", x_q.shape, np.int8, quant=x_quant)
    tdy = g.input("dy", dy.shape)
    tmode = g.input("mode", [1], np.int32)
    tw = g.const("w", w_q, quant=Quant.of(w_scales, 0))
    tb = g.const("b", bias_q, quant=Quant.of(x_quant.scale[0] * w_scales, 0))
    ty = g.output(g.tensor("y", [batches, units], np.int8, quant=y_quant))
    options = schema.FullyConnectedOptionsT()
    options.fusedActivationFunction = activation
    g.model.append_op(
        "FULLY_CONNECTED",
        [tx, tw, tb],
        [ty],
        builtin_options=options,
        builtin_options_type=schema.BuiltinOptions.FullyConnectedOptions,
    )
    tdx = g.output(g.tensor("dx", x_q.shape))
    layer = ops.LinearLayer.fully_connected(in_features, units, activation)
    g.op(ops.FULLY_CONNECTED_GRAD, [tdy, tx, ty if activation else -1, tw, -1, tmode, -1], [tdx], layer.options())
    return g, tx, tdy, tmode, ty, tdx


@pytest.mark.parametrize("activation", [ops.Activation.NONE, ops.Activation.RELU])
def test_fully_connected_grad_int8_uses_own_quantization(activation):
    rng = np.random.default_rng(11)
    batches, in_features, units = 2, 9, 6
    x_quant, y_quant = Quant.of(0.05, -3), Quant.of(0.08, -20)
    w_scales = rng.uniform(0.005, 0.02, size=units).astype(np.float32)
    x_q = rng.integers(-128, 128, size=(batches, in_features)).astype(np.int8)
    w_q = rng.integers(-127, 128, size=(units, in_features)).astype(np.int8)
    bias_q = rng.integers(-500, 500, size=units).astype(np.int32)
    dy = rng.normal(size=(batches, units)).astype(np.float32)
    g, tx, tdy, tmode, ty, tdx = _int8_fc_graph(x_q, w_q, w_scales, bias_q, x_quant, y_quant, activation, dy)
    out = g.run({tx: x_q, tdy: dy, tmode: TRAIN})

    x_real = tf.Variable(0.05 * (x_q.astype(np.float32) + 3))
    w_real = tf.constant(w_q.astype(np.float32) * w_scales[:, None])
    y_real = 0.08 * (out[ty].astype(np.float32) + 20)
    mask = (y_real > 0).astype(np.float32) if activation else 1.0
    with tf.GradientTape() as tape:
        z = tf.matmul(x_real, w_real, transpose_b=True)
    want = tape.gradient(z, x_real, output_gradients=tf.constant(dy * mask))
    assert relative_error(out[tdx], want.numpy()) < TOLERANCE


def test_int8_lora_layer_is_bit_exact_with_stock_kernel_at_init():
    """B = 0: our int8 FULLY_CONNECTED gives the stock kernel's bytes."""
    rng = np.random.default_rng(5)
    batches, in_features, units, rank = 3, 16, 8, 2
    x_quant, y_quant = Quant.of(0.031, 7), Quant.of(0.11, -5)
    w_scales = rng.uniform(0.002, 0.03, size=units).astype(np.float32)
    x_q = rng.integers(-128, 128, size=(batches, in_features)).astype(np.int8)
    w_q = rng.integers(-127, 128, size=(units, in_features)).astype(np.int8)
    bias_q = rng.integers(-3000, 3000, size=units).astype(np.int32)
    stock, tx, tdy, tmode, ty, _ = _int8_fc_graph(
        x_q, w_q, w_scales, bias_q, x_quant, y_quant, ops.Activation.RELU, np.zeros((batches, units), np.float32)
    )
    want = stock.run({tx: x_q, tdy: np.zeros((batches, units)), tmode: INFER})[ty]

    params = np.concatenate([rng.normal(size=rank * in_features), np.zeros(units * rank)]).astype(np.float32)
    layer = ops.LinearLayer.fully_connected(
        in_features, units, ops.Activation.RELU, lora_rank=rank, lora_a_offset=0, lora_b_offset=rank * in_features, lora_scale=1.0
    )
    g = Graph()
    gx = g.input("x", x_q.shape, np.int8, quant=x_quant)
    gstate = g.state(params)
    gy = g.output(g.tensor("y", [batches, units], np.int8, quant=y_quant))
    gw = g.const("w", w_q, quant=Quant.of(w_scales, 0))
    gb = g.const("b", bias_q, quant=Quant.of(x_quant.scale[0] * w_scales, 0))
    g.op(ops.FULLY_CONNECTED, [gx, gw, gb, gstate], [gy, g.tensor("h", [batches, rank])], layer.options())
    got = g.run({gx: x_q, gstate: state_blob(params)})[gy]
    np.testing.assert_array_equal(got, want)


# ---- activations, softmax -------------------------------------------------------------------------
ACTIVATION_CASES = [
    ops.Activation.RELU,
    ops.Activation.RELU6,
    ops.Activation.RELU_N1_TO_1,
    ops.Activation.TANH,
    ops.Activation.LOGISTIC,
]


@pytest.mark.parametrize("activation", ACTIVATION_CASES, ids=lambda a: a.name)
def test_activation_grad_float(activation):
    rng = np.random.default_rng(int(activation))
    x = away_from_kinks(rng, (2, 11), scale=3.0)
    dy = rng.normal(size=x.shape).astype(np.float32)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = TF_ACTIVATIONS[activation](variable)
    want = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()

    g = Graph()
    tdy, ty, tmode = g.input("dy", x.shape), g.input("y", x.shape), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", x.shape))
    g.op(ops.ACTIVATION_GRAD, [tdy, ty, tmode], [tdx], ops.activation_grad_options(activation))
    got = g.run({tdy: dy, ty: y.numpy(), tmode: TRAIN})[tdx]
    assert relative_error(got, want) < TOLERANCE


@pytest.mark.parametrize("activation", [ops.Activation.RELU, ops.Activation.TANH, ops.Activation.LOGISTIC], ids=lambda a: a.name)
def test_activation_grad_int8(activation):
    """The derivative at the dequantized output, as TensorFlow gives it there."""
    rng = np.random.default_rng(100 + int(activation))
    quant = {
        ops.Activation.RELU: Quant.of(0.05, -128),
        ops.Activation.TANH: Quant.of(1 / 128, 0),
        ops.Activation.LOGISTIC: Quant.of(1 / 256, -128),
    }[activation]
    y_q = rng.integers(-127, 127, size=(1, 40)).astype(np.int8)
    y_real = (quant.scale[0] * (y_q.astype(np.float64) - quant.zero_point[0])).astype(np.float32)
    dy = rng.normal(size=y_q.shape).astype(np.float32)
    # Inputs whose activation is exactly y_real, so TF differentiates at that point.
    x = {
        ops.Activation.RELU: np.where(y_real > 0, y_real, -1.0),
        ops.Activation.TANH: np.arctanh(np.clip(y_real, -0.999, 0.999)),
        ops.Activation.LOGISTIC: np.log(np.clip(y_real, 1e-6, 1 - 1e-6) / (1 - np.clip(y_real, 1e-6, 1 - 1e-6))),
    }[activation].astype(np.float32)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = TF_ACTIVATIONS[activation](variable)
    want = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()

    g = Graph()
    tdy, tmode = g.input("dy", y_q.shape), g.input("mode", [1], np.int32)
    ty = g.input("y", y_q.shape, np.int8, quant=quant)
    tdx = g.output(g.tensor("dx", y_q.shape))
    g.op(ops.ACTIVATION_GRAD, [tdy, ty, tmode], [tdx], ops.activation_grad_options(activation))
    got = g.run({tdy: dy, ty: y_q, tmode: TRAIN})[tdx]
    assert relative_error(got, want) < 2e-5


@pytest.mark.parametrize("beta", [1.0, 0.6])
@pytest.mark.parametrize("quantized", [False, True])
def test_softmax_grad(beta, quantized):
    rng = np.random.default_rng(int(beta * 10) + quantized)
    x = rng.normal(size=(3, 10)).astype(np.float32) * 2
    dy = rng.normal(size=x.shape).astype(np.float32)
    g = Graph()
    tdy, tmode = g.input("dy", x.shape), g.input("mode", [1], np.int32)
    if quantized:
        quant = Quant.of(1 / 256, -128)
        y_q = np.clip(np.round(tf.nn.softmax(beta * x).numpy() * 256) - 128, -128, 127).astype(np.int8)
        y_value = (y_q.astype(np.float32) + 128) / 256
        ty = g.input("y", x.shape, np.int8, quant=quant)
        feed_y = y_q
    else:
        y_value = tf.nn.softmax(beta * x).numpy()
        ty = g.input("y", x.shape)
        feed_y = y_value
    tdx = g.output(g.tensor("dx", x.shape))
    g.op(ops.SOFTMAX_GRAD, [tdy, ty, tmode], [tdx], ops.softmax_grad_options(beta))
    got = g.run({tdy: dy, ty: feed_y, tmode: TRAIN})[tdx]
    if quantized:  # TensorFlow's softmax gradient written at the dequantized output
        want = beta * y_value * (dy - np.sum(dy * y_value, axis=-1, keepdims=True))
    else:
        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = tf.nn.softmax(beta * variable)
        want = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    assert relative_error(got, want) < TOLERANCE


# ---- losses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ce", "mse", "bce"])
@pytest.mark.parametrize("batches", [1, 3])
def test_loss_value_and_gradient(kind, batches):
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
    want_grad = tape.gradient(loss, variable).numpy()

    g = Graph()
    tp, tmode = g.input("logits", logits.shape), g.input("mode", [1], np.int32)
    tt = g.input("target", target.shape, target.dtype)
    tloss, tgrad = g.output(g.tensor("loss", [1])), g.output(g.tensor("grad", logits.shape))
    g.op(ops.LOSS, [tp, tt, tmode], [tloss, tgrad], ops.loss_options(kind))
    out = g.run({tp: logits, tt: target, tmode: TRAIN})
    assert relative_error(out[tloss], [loss.numpy()]) < TOLERANCE
    assert relative_error(out[tgrad], want_grad) < TOLERANCE


def test_cross_entropy_on_int8_logits():
    rng = np.random.default_rng(9)
    quant = Quant.of(0.1, 4)
    q = rng.integers(-128, 128, size=(1, 10)).astype(np.int8)
    real = (0.1 * (q.astype(np.float32) - 4)).astype(np.float32)
    variable = tf.Variable(real)
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([3]), variable)
    g = Graph()
    tp = g.input("logits", q.shape, np.int8, quant=quant)
    tt, tmode = g.input("target", [1], np.int32), g.input("mode", [1], np.int32)
    tloss, tgrad = g.output(g.tensor("loss", [1])), g.output(g.tensor("grad", q.shape))
    g.op(ops.LOSS, [tp, tt, tmode], [tloss, tgrad], ops.loss_options("ce"))
    out = g.run({tp: q, tt: np.array([3], np.int32), tmode: TRAIN})
    assert relative_error(out[tloss], [loss.numpy()]) < TOLERANCE
    assert relative_error(out[tgrad], tape.gradient(loss, variable).numpy()) < TOLERANCE


def test_loss_rejects_a_label_out_of_range():
    """Evaluating: an error naming the label. Training: the sample is skipped
    (loss NaN; the mode becomes SKIP, tested in test_guards.py)."""
    from tflm_train.runtime import InterpreterError

    g = Graph()
    tp, tt, tmode = g.input("logits", [1, 4]), g.input("target", [1], np.int32), g.input("mode", [1], np.int32)
    tloss, tgrad = g.output(g.tensor("loss", [1])), g.output(g.tensor("grad", [1, 4]))
    g.op(ops.LOSS, [tp, tt, tmode], [tloss, tgrad], ops.loss_options("ce"))
    with pytest.raises(InterpreterError, match=r"label 7 is outside \[0, 4\)"):
        g.run({tp: np.zeros((1, 4)), tt: np.array([7], np.int32), tmode: np.array([ops.Mode.EVALUATE], np.int32)})
    out = g.run({tp: np.zeros((1, 4)), tt: np.array([7], np.int32), tmode: TRAIN})
    assert np.isnan(out[tloss]).all()


# ---- bottleneck adapter ---------------------------------------------------------------------------------
@pytest.mark.parametrize("quantized", [False, True])
def test_adapter_forward_and_grad(quantized):
    rng = np.random.default_rng(21 + quantized)
    batches, features, width = 2, 8, 3
    down = rng.normal(size=(width, features)).astype(np.float32) * 0.5
    down_bias = rng.normal(size=width).astype(np.float32) * 0.1
    up = rng.normal(size=(features, width)).astype(np.float32) * 0.5
    up_bias = rng.normal(size=features).astype(np.float32) * 0.1
    flat = np.concatenate([down.ravel(), down_bias, up.ravel(), up_bias])
    layer = ops.AdapterLayer(features, width, 0, down.size, down.size + width, down.size + width + up.size)
    dy = rng.normal(size=(batches, features)).astype(np.float32)

    g = Graph()
    quant = Quant.of(0.04, -10) if quantized else None
    dtype = np.int8 if quantized else np.float32
    tx = g.input("x", [batches, features], dtype, quant=quant)
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tstate = g.state(flat)
    ty = g.output(g.tensor("y", [batches, features], dtype, quant=quant))
    th = g.tensor("hidden", [batches, width])
    g.op(ops.ADAPTER, [tx, tstate], [ty, th], layer.options())
    tdx = g.output(g.tensor("dx", [batches, features]))
    g.op(ops.ADAPTER_GRAD, [tdy, tx, th, tstate, tmode], [tdx], layer.options())
    if quantized:
        x_q = rng.integers(-100, 100, size=(batches, features)).astype(np.int8)
        x_real, feed_x = (0.04 * (x_q.astype(np.float32) + 10)).astype(np.float32), x_q
    else:
        x_real = away_from_kinks(rng, (batches, features))
        feed_x = x_real
    out = g.run({tx: feed_x, tdy: dy, tmode: TRAIN, tstate: state_blob(flat)})

    variables = [tf.Variable(v) for v in (x_real, down, down_bias, up, up_bias)]
    with tf.GradientTape() as tape:
        hidden = tf.nn.relu(tf.matmul(variables[0], variables[1], transpose_b=True) + variables[2])
        y = variables[0] + tf.matmul(hidden, variables[3], transpose_b=True) + variables[4]
    grads = [t.numpy() for t in tape.gradient(y, variables, output_gradients=tf.constant(dy))]
    if quantized:
        want_y = np.clip(np.round(y.numpy() / 0.04) - 10, -128, 127).astype(np.int8)
        assert np.max(np.abs(out[ty].astype(int) - want_y.astype(int))) <= 1
    else:
        assert relative_error(out[ty], y.numpy()) < TOLERANCE
    assert relative_error(out[tdx], grads[0]) < TOLERANCE
    np_grads = state_grads(out[tstate], flat.size)
    assert relative_error(np_grads, np.concatenate([g.ravel() for g in grads[1:]])) < TOLERANCE
