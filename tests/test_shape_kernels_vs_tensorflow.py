"""Pooling, MEAN, PAD, CONCATENATION and broadcasting ADD/SUB/MUL gradients
against tf.GradientTape. Each test runs the stock forward op and our gradient
op together in the TFLM interpreter, as a converted model does."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from graphs import Graph, relative_error
from tflm_train.converter import ops
from tflm_train.converter.layers import same_padding
from tflm_train.converter.model_ir import Quant

TOLERANCE = 1e-5
TRAIN = np.array([ops.Mode.TRAIN], np.int32)
PADDING = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}


def builtin(g: Graph, name: str, inputs, outputs, options, options_type):
    g.model.append_op(name, inputs, outputs, builtin_options=options, builtin_options_type=options_type)


@pytest.mark.parametrize("kind", ["average", "max"])
@pytest.mark.parametrize("padding,kernel,stride", [("VALID", (2, 2), (2, 2)), ("SAME", (3, 3), (2, 1)), ("SAME", (3, 2), (1, 1))])
@pytest.mark.parametrize("quantized", [False, True])
def test_pool_grad(kind, padding, kernel, stride, quantized):
    rng = np.random.default_rng(len(kind) * 10 + kernel[0] + stride[1] + quantized)
    x_shape = (2, 7, 6, 3)
    out_h, pad_top = same_padding(7, kernel[0], stride[0], 1, PADDING[padding])
    out_w, pad_left = same_padding(6, kernel[1], stride[1], 1, PADDING[padding])
    y_shape = (2, out_h, out_w, 3)
    quant = Quant.of(0.05, -4) if quantized else None
    dtype = np.int8 if quantized else np.float32
    g = Graph()
    tx = g.input("x", x_shape, dtype, quant=quant)
    tdy, tmode = g.input("dy", y_shape), g.input("mode", [1], np.int32)
    ty = g.output(g.tensor("y", y_shape, dtype, quant=quant))
    options = schema.Pool2DOptionsT()
    options.padding, (options.filterHeight, options.filterWidth) = PADDING[padding], kernel
    options.strideH, options.strideW = stride
    name = "AVERAGE_POOL_2D" if kind == "average" else "MAX_POOL_2D"
    builtin(g, name, [tx], [ty], options, schema.BuiltinOptions.Pool2DOptions)
    tdx = g.output(g.tensor("dx", x_shape))
    blob = ops.pool_grad_options(kind, x_shape, y_shape, kernel, stride, (pad_top, pad_left))
    inputs = [tdy, tx, ty, tmode] if kind == "max" else [tdy, -1, -1, tmode]
    g.op(ops.POOL_GRAD, inputs, [tdx], blob)
    if quantized:
        x_q = rng.permutation(np.arange(-126, 126)).astype(np.int8).reshape(x_shape)  # 252 values, no ties
        x_real, feed = 0.05 * (x_q.astype(np.float32) + 4), x_q
    else:
        x_real = rng.permutation(np.prod(x_shape)).astype(np.float32).reshape(x_shape) / 10  # no ties
        feed = x_real
    dy = rng.normal(size=y_shape).astype(np.float32)
    out = g.run({tx: feed, tdy: dy, tmode: TRAIN})
    variable = tf.Variable(x_real)
    with tf.GradientTape() as tape:
        pool = tf.nn.avg_pool2d if kind == "average" else tf.nn.max_pool2d
        y = pool(variable, kernel, stride, padding)
    want = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    assert relative_error(out[tdx], want) < TOLERANCE


@pytest.mark.parametrize("axes,keep", [([1, 2], True), ([1, 2], False), ([3], False), ([0, 2], True)])
def test_mean_grad(axes, keep):
    rng = np.random.default_rng(sum(axes) + keep)
    x_shape = (2, 5, 4, 3)
    x = rng.normal(size=x_shape).astype(np.float32)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = tf.reduce_mean(variable, axis=axes, keepdims=keep)
    dy = rng.normal(size=y.shape).astype(np.float32)
    want = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", x_shape))
    g.op(ops.MEAN_GRAD, [tdy, tmode], [tdx], ops.mean_grad_options(x_shape, axes))
    got = g.run({tdy: dy, tmode: TRAIN})[tdx]
    assert relative_error(got, want) < TOLERANCE


def test_pad_grad_is_a_crop():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 5, 4, 2)).astype(np.float32)
    paddings = [[0, 0], [1, 2], [0, 1], [0, 0]]
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = tf.pad(variable, paddings)
    dy = rng.normal(size=y.shape).astype(np.float32)
    want = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", x.shape))
    g.op(ops.CROP, [tdy, tmode], [tdx], ops.crop_options(dy.shape, [p[0] for p in paddings], x.shape))
    assert relative_error(g.run({tdy: dy, tmode: TRAIN})[tdx], want) < TOLERANCE


@pytest.mark.parametrize("axis", [3, 1, -1])
def test_concatenation_grad(axis):
    rng = np.random.default_rng(axis + 7)
    parts = [rng.normal(size=(1, 3, 4, c)).astype(np.float32) for c in (2, 5, 1)] if axis % 4 == 3 else [
        rng.normal(size=(1, h, 4, 2)).astype(np.float32) for h in (2, 3)
    ]
    variables = [tf.Variable(p) for p in parts]
    with tf.GradientTape() as tape:
        y = tf.concat(variables, axis=axis)
    dy = rng.normal(size=y.shape).astype(np.float32)
    wants = [t.numpy() for t in tape.gradient(y, variables, output_gradients=tf.constant(dy))]
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    offset, outputs = 0, []
    for part in parts:
        begin = [0, 0, 0, 0]
        begin[axis % 4] = offset
        t = g.output(g.tensor(f"dx{len(outputs)}", part.shape))
        g.op(ops.CROP, [tdy, tmode], [t], ops.crop_options(dy.shape, begin, part.shape))
        outputs.append(t)
        offset += part.shape[axis % 4]
    out = g.run({tdy: dy, tmode: TRAIN})
    for t, want in zip(outputs, wants):
        assert relative_error(out[t], want) < TOLERANCE


@pytest.mark.parametrize("kind", ["add", "subtract", "multiply"])
@pytest.mark.parametrize("a_shape,b_shape", [((2, 3, 4), (4,)), ((1, 5, 1, 3), (1, 1, 6, 3)), ((3, 1), (1, 3))])
def test_broadcast_grad(kind, a_shape, b_shape):
    rng = np.random.default_rng(len(kind) + len(a_shape) * 3 + len(b_shape))
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    va, vb = tf.Variable(a), tf.Variable(b)
    with tf.GradientTape() as tape:
        y = {"add": va + vb, "subtract": va - vb, "multiply": va * vb}[kind]
    dy = rng.normal(size=y.shape).astype(np.float32)
    want_a, want_b = (t.numpy() for t in tape.gradient(y, [va, vb], output_gradients=tf.constant(dy)))
    out_shape = list(y.shape)
    rank = len(out_shape)

    def aligned(shape):
        return [1] * (rank - len(shape)) + list(shape)

    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    ta, tb = g.input("a", a_shape), g.input("b", b_shape)
    tda, tdb = g.output(g.tensor("da", a_shape)), g.output(g.tensor("db", b_shape))
    first = "multiply" if kind == "multiply" else "add"
    second = kind if kind != "add" else "add"
    g.op(ops.BROADCAST_GRAD, [tdy, tb if kind == "multiply" else -1, tmode], [tda],
         ops.broadcast_grad_options(first, out_shape, aligned(a_shape), aligned(b_shape)))
    g.op(ops.BROADCAST_GRAD, [tdy, ta if kind == "multiply" else -1, tmode], [tdb],
         ops.broadcast_grad_options(second, out_shape, aligned(b_shape), aligned(a_shape)))
    out = g.run({tdy: dy, tmode: TRAIN, ta: a, tb: b})
    assert relative_error(out[tda], want_a) < TOLERANCE
    assert relative_error(out[tdb], want_b) < TOLERANCE


def test_broadcast_mul_grad_with_int8_operand():
    rng = np.random.default_rng(5)
    quant = Quant.of(0.02, 3)
    other_q = rng.integers(-128, 128, size=(1, 4)).astype(np.int8)
    other = 0.02 * (other_q.astype(np.float32) - 3)
    a = rng.normal(size=(3, 4)).astype(np.float32)
    va = tf.Variable(a)
    with tf.GradientTape() as tape:
        y = va * other
    dy = rng.normal(size=(3, 4)).astype(np.float32)
    want = tape.gradient(y, va, output_gradients=tf.constant(dy)).numpy()
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tother = g.input("other", (1, 4), np.int8, quant=quant)
    tda = g.output(g.tensor("da", a.shape))
    g.op(ops.BROADCAST_GRAD, [tdy, tother, tmode], [tda], ops.broadcast_grad_options("multiply", [3, 4], [3, 4], [1, 4]))
    assert relative_error(g.run({tdy: dy, tmode: TRAIN, tother: other_q})[tda], want) < TOLERANCE
