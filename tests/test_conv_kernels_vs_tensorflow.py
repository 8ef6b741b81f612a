"""CONV_2D and DEPTHWISE_CONV_2D forward and backward kernels against TensorFlow.

Our layer ops run in the TFLM interpreter; tf.nn.conv2d / depthwise_conv2d
with tf.GradientTape give the reference. Float cases agree within 1e-5
relative; int8 layers keep the stock kernels' exact bytes at initialization
and backpropagate with their own quantization parameters.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from graphs import Graph, relative_error, state_blob, state_grads
from tflm_train.converter import ops
from tflm_train.converter.layers import same_padding
from tflm_train.converter.model_ir import Quant

TOLERANCE = 1e-5
TRAIN = np.array([ops.Mode.TRAIN], np.int32)
INFER = np.array([ops.Mode.INFER], np.int32)
TF_ACT = {0: tf.identity, 1: tf.nn.relu, 3: tf.nn.relu6}
PADDING = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}


def geometry(kind, x_shape, out_c, kernel, stride, dilation, padding, activation=0):
    _, h, w, c = x_shape
    out_h, pad_top = same_padding(h, kernel[0], stride[0], dilation[0], PADDING[padding])
    out_w, pad_left = same_padding(w, kernel[1], stride[1], dilation[1], PADDING[padding])
    return ops.LinearLayer(
        kind=kind,
        in_channels=c,
        out_channels=out_c,
        activation=activation,
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        padding=(pad_top, pad_left),
        depth_multiplier=out_c // c if kind == ops.LinearKind.DEPTHWISE_CONV_2D else 1,
        out_size=(out_h, out_w),
    )


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


CASES = [
    # (kind, x shape, out_c, kernel, stride, dilation, padding, activation, parts)
    ("conv-input-only", ops.LinearKind.CONV_2D, (1, 7, 6, 3), 4, (3, 3), (1, 1), (1, 1), "SAME", 1, ()),
    ("conv-stride2-valid", ops.LinearKind.CONV_2D, (2, 9, 8, 2), 5, (3, 2), (2, 2), (1, 1), "VALID", 0, ("bias",)),
    ("conv-dilated", ops.LinearKind.CONV_2D, (1, 8, 8, 2), 3, (3, 3), (1, 1), (2, 2), "SAME", 3, ("weights", "bias")),
    ("conv-lora", ops.LinearKind.CONV_2D, (1, 6, 5, 4), 6, (3, 3), (2, 1), (1, 1), "SAME", 1, ("lora",)),
    ("conv-lora-bias-1x1", ops.LinearKind.CONV_2D, (2, 4, 4, 5), 3, (1, 1), (1, 1), (1, 1), "VALID", 0, ("lora", "bias")),
    ("dw-input-only", ops.LinearKind.DEPTHWISE_CONV_2D, (1, 7, 7, 3), 3, (3, 3), (2, 2), (1, 1), "SAME", 1, ()),
    ("dw-multiplier", ops.LinearKind.DEPTHWISE_CONV_2D, (1, 6, 5, 2), 6, (3, 2), (1, 1), (1, 1), "VALID", 3, ("bias",)),
    ("dw-dilated-weights", ops.LinearKind.DEPTHWISE_CONV_2D, (2, 8, 7, 3), 3, (3, 3), (1, 1), (2, 2), "SAME", 0, ("weights", "bias")),
    # TensorFlow's depthwise_conv2d needs equal strides; ours do not.
    ("dw-lora", ops.LinearKind.DEPTHWISE_CONV_2D, (1, 9, 6, 4), 8, (5, 3), (2, 2), (1, 1), "SAME", 1, ("lora",)),
]


@pytest.mark.parametrize("name,kind,x_shape,out_c,kernel,stride,dilation,padding,activation,parts", CASES, ids=[c[0] for c in CASES])
def test_conv_forward_and_gradients(name, kind, x_shape, out_c, kernel, stride, dilation, padding, activation, parts):
    rng = np.random.default_rng(sum(map(ord, name)))
    layer = geometry(kind, x_shape, out_c, kernel, stride, dilation, padding, activation)
    rank, scale = 2, 0.8
    x = rng.normal(size=x_shape).astype(np.float32)
    w = (rng.normal(size=layer.weight_shape()) * 0.4).astype(np.float32)
    b = (rng.normal(size=out_c) * 0.1).astype(np.float32)
    a = (rng.normal(size=layer.lora_a_shape(rank)) * 0.4).astype(np.float32)
    b_lora = (rng.normal(size=(out_c, rank)) * 0.4).astype(np.float32)
    y_shape = (x_shape[0], *layer.out_size, out_c)
    dy = rng.normal(size=y_shape).astype(np.float32)

    params, offsets = [], {}
    for key, values, wanted in (("weights", w, "weights"), ("bias", b, "bias"), ("lora_A", a, "lora"), ("lora_B", b_lora, "lora")):
        if wanted in parts:
            offsets[key] = sum(p.size for p in params)
            params.append(values.reshape(-1))
    flat = np.concatenate(params) if params else np.zeros(1, np.float32)
    layer = dataclasses.replace(
        layer,
        weight_offset=offsets.get("weights", -1),
        bias_offset=offsets.get("bias", -1),
        lora_rank=rank if "lora" in parts else 0,
        lora_a_offset=offsets.get("lora_A", -1),
        lora_b_offset=offsets.get("lora_B", -1),
        lora_scale=scale if "lora" in parts else 0.0,
    )

    g = Graph()
    tx, tdy, tmode = g.input("x", x_shape), g.input("dy", y_shape), g.input("mode", [1], np.int32)
    tstate = g.state(flat)
    tw = -1 if "weights" in parts else g.const("w", w)
    tb = -1 if "bias" in parts else g.const("b", b)
    ty = g.output(g.tensor("y", y_shape))
    fwd_outputs, th = [ty], -1
    if "lora" in parts and kind == ops.LinearKind.CONV_2D:
        th = g.tensor("h", (*y_shape[:3], rank))
        fwd_outputs.append(th)
    g.op(layer.forward_op, [tx, tw, tb, tstate], fwd_outputs, layer.options())
    tdx = g.output(g.tensor("dx", x_shape))
    g.op(layer.grad_op, [tdy, tx, ty if activation else -1, tw, tstate if parts else -1, tmode, th], [tdx], layer.options())
    out = g.run({tx: x, tdy: dy, tmode: TRAIN, tstate: state_blob(flat)})

    v = {k: tf.Variable(val) for k, val in {"x": x, "weights": w, "bias": b, "lora_A": a, "lora_B": b_lora}.items()}
    with tf.GradientTape() as tape:
        filt = v["weights"]
        if "lora" in parts and kind == ops.LinearKind.DEPTHWISE_CONV_2D:
            delta = scale * tf.matmul(v["lora_B"], v["lora_A"])  # [out_c, taps]
            filt = filt + tf.reshape(tf.transpose(delta), layer.weight_shape())
        z = tf_conv(kind, v["x"], filt, layer, padding) + v["bias"]
        if "lora" in parts and kind == ops.LinearKind.CONV_2D:
            hidden = tf_conv(kind, v["x"], v["lora_A"], dataclasses.replace(layer, out_channels=rank), padding)
            z = z + scale * tf.einsum("nhwr,or->nhwo", hidden, v["lora_B"])
        y = TF_ACT[activation](z)
    keys = ["x"] + [k for k in ("weights", "bias", "lora_A", "lora_B") if k in offsets]
    grads = dict(zip(keys, tape.gradient(y, [v[k] for k in keys], output_gradients=tf.constant(dy))))

    assert relative_error(out[ty], y.numpy()) < TOLERANCE
    assert relative_error(out[tdx], grads["x"].numpy()) < TOLERANCE
    if parts:
        got = state_grads(out[tstate], flat.size)
        for key in keys[1:]:
            want = grads[key].numpy().reshape(-1)
            assert relative_error(got[offsets[key] : offsets[key] + want.size], want) < TOLERANCE, key


def _stock_int8(kind, layer, padding, x_q, w_q, w_scales, bias_q, x_quant, y_quant):
    """The stock int8 CONV_2D / DEPTHWISE_CONV_2D on one input."""
    y_shape = (x_q.shape[0], *layer.out_size, layer.out_channels)
    g = Graph()
    tx = g.input("x", x_q.shape, np.int8, quant=x_quant)
    axis = 0 if kind == ops.LinearKind.CONV_2D else 3
    tw = g.const("w", w_q, quant=Quant.of(w_scales, 0, axis))
    tb = g.const("b", bias_q, quant=Quant.of(x_quant.scale[0] * w_scales, 0))
    ty = g.output(g.tensor("y", y_shape, np.int8, quant=y_quant))
    if kind == ops.LinearKind.CONV_2D:
        options, name, otype = schema.Conv2DOptionsT(), "CONV_2D", schema.BuiltinOptions.Conv2DOptions
    else:
        options, name, otype = schema.DepthwiseConv2DOptionsT(), "DEPTHWISE_CONV_2D", schema.BuiltinOptions.DepthwiseConv2DOptions
        options.depthMultiplier = layer.depth_multiplier
    options.padding = PADDING[padding]
    options.strideH, options.strideW = layer.stride
    options.dilationHFactor, options.dilationWFactor = layer.dilation
    options.fusedActivationFunction = layer.activation
    g.model.append_op(name, [tx, tw, tb], [ty], builtin_options=options, builtin_options_type=otype)
    return g.run({tx: x_q})[ty]


@pytest.mark.parametrize("kind", [ops.LinearKind.CONV_2D, ops.LinearKind.DEPTHWISE_CONV_2D], ids=["conv", "depthwise"])
def test_int8_layer_matches_stock_kernel_and_backpropagates(kind):
    rng = np.random.default_rng(int(kind) + 40)
    x_shape, out_c = (1, 8, 7, 4), 8
    layer = geometry(kind, x_shape, out_c, (3, 3), (2, 2), (1, 1), "SAME", activation=1)
    x_quant, y_quant = Quant.of(0.04, -7), Quant.of(0.06, -128)
    w_scales = rng.uniform(0.004, 0.02, size=out_c).astype(np.float32)
    x_q = rng.integers(-128, 128, size=x_shape).astype(np.int8)
    w_q = rng.integers(-127, 128, size=layer.weight_shape()).astype(np.int8)
    bias_q = rng.integers(-2000, 2000, size=out_c).astype(np.int32)
    want = _stock_int8(kind, layer, "SAME", x_q, w_q, w_scales, bias_q, x_quant, y_quant)

    rank = 2
    a = rng.normal(size=layer.lora_a_shape(rank)).astype(np.float32)
    params = np.concatenate([a.ravel(), np.zeros(out_c * rank, np.float32)])
    ours = dataclasses.replace(layer, lora_rank=rank, lora_a_offset=0, lora_b_offset=a.size, lora_scale=1.0)
    y_shape = (1, *layer.out_size, out_c)
    axis = 0 if kind == ops.LinearKind.CONV_2D else 3
    g = Graph()
    tx = g.input("x", x_shape, np.int8, quant=x_quant)
    tdy, tmode = g.input("dy", y_shape), g.input("mode", [1], np.int32)
    tstate = g.state(params)
    tw = g.const("w", w_q, quant=Quant.of(w_scales, 0, axis))
    tb = g.const("b", bias_q, quant=Quant.of(x_quant.scale[0] * w_scales, 0))
    ty = g.output(g.tensor("y", y_shape, np.int8, quant=y_quant))
    outputs, th = [ty], -1
    if kind == ops.LinearKind.CONV_2D:
        th = g.tensor("h", (*y_shape[:3], rank))
        outputs.append(th)
    g.op(ours.forward_op, [tx, tw, tb, tstate], outputs, ours.options())
    tdx = g.output(g.tensor("dx", x_shape))
    g.op(ours.grad_op, [tdy, tx, ty, tw, tstate, tmode, th], [tdx], ours.options())
    dy = rng.normal(size=y_shape).astype(np.float32)
    out = g.run({tx: x_q, tdy: dy, tmode: TRAIN, tstate: state_blob(params)})
    np.testing.assert_array_equal(out[ty], want)  # B = 0: the stock kernel's bytes

    # Input gradient with the layer's own scales, and LoRA B's gradient.
    x_real = tf.Variable(0.04 * (x_q.astype(np.float32) + 7))
    shape = [1] * 4
    shape[axis] = -1
    w_real = tf.constant(w_q.astype(np.float32) * w_scales.reshape(shape))
    mask = (0.06 * (out[ty].astype(np.float32) + 128) > 0).astype(np.float32)
    b_var = tf.Variable(np.zeros((out_c, rank), np.float32))
    with tf.GradientTape() as tape:
        z = tf_conv(kind, x_real, w_real, layer, "SAME")
        if kind == ops.LinearKind.CONV_2D:
            hidden = tf_conv(kind, x_real, tf.constant(a), dataclasses.replace(layer, out_channels=rank), "SAME")
            z = z + tf.einsum("nhwr,or->nhwo", hidden, b_var)
        else:
            z = z + tf_conv(kind, x_real, tf.reshape(tf.transpose(tf.matmul(b_var, a)), layer.weight_shape()), layer, "SAME")
    dx_want, db_want = tape.gradient(z, [x_real, b_var], output_gradients=tf.constant(dy * mask))
    assert relative_error(out[tdx], dx_want.numpy()) < TOLERANCE
    got_b = state_grads(out[tstate], params.size)[a.size :]
    assert relative_error(got_b, db_want.numpy().ravel()) < TOLERANCE


def test_stock_conv_backprop_runs_only_in_train_mode():
    rng = np.random.default_rng(1)
    layer = geometry(ops.LinearKind.CONV_2D, (1, 5, 5, 2), 3, (3, 3), (1, 1), (1, 1), "SAME")
    g = Graph()
    tdy, tx, tmode = g.input("dy", [1, 5, 5, 3]), g.input("x", [1, 5, 5, 2]), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", [1, 5, 5, 2]))
    w = rng.normal(size=layer.weight_shape()).astype(np.float32)
    g.op(layer.grad_op, [tdy, tx, -1, g.const("w", w), -1, tmode, -1], [tdx], layer.options())
    feeds = {tdy: np.ones((1, 5, 5, 3)), tx: np.zeros((1, 5, 5, 2))}
    trained = g.run({**feeds, tmode: TRAIN})[tdx]
    assert np.abs(trained).sum() > 0
