"""CONV_2D and DEPTHWISE_CONV_2D forward and backward kernels against TensorFlow.

Our layer ops run in the TFLM interpreter; tf.nn.conv2d / depthwise_conv2d
with tf.GradientTape give the reference (tests/golden/conv_kernels.npz,
written by golden/make_golden.py). Float cases agree within 1e-5 relative;
int8 layers keep the stock kernels' exact bytes at initialization and
backpropagate with their own quantization parameters.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import golden
from graphs import Graph, conv_geometry, relative_error, state_blob, state_grads, stock_int8_conv
from tflm_train.converter import ops
from tflm_train.converter.model_ir import Quant

TOLERANCE = 1e-5
TRAIN = np.array([ops.Mode.TRAIN], np.int32)
PART_ORDER = (("weights", "weights"), ("bias", "bias"), ("lora_A", "lora"), ("lora_B", "lora"))


def quant(pair) -> Quant:
    return Quant.of(float(pair[0]), int(pair[1]))


@pytest.mark.parametrize("name", golden.case_ids("conv_kernels", "conv"))
def test_conv_forward_and_gradients(name):
    c = golden.case("conv_kernels", "conv", name)
    kind, x, dy = ops.LinearKind(int(c["kind"])), c["x"], c["dy"]
    parts, activation, rank = set(c["parts"].tolist()), int(c["activation"]), int(c["lora_rank"])
    layer = conv_geometry(kind, x.shape, int(c["out_c"]), c["kernel"].tolist(), c["stride"].tolist(),
                          c["dilation"].tolist(), str(c["padding"]), activation)
    assert dy.shape == (x.shape[0], *layer.out_size, layer.out_channels)

    params, offsets = [], {}
    for key, part in PART_ORDER:
        if part in parts:
            offsets[key] = sum(p.size for p in params)
            params.append(c[key].reshape(-1))
    flat = np.concatenate(params) if params else np.zeros(1, np.float32)
    layer = dataclasses.replace(
        layer,
        weight_offset=offsets.get("weights", -1),
        bias_offset=offsets.get("bias", -1),
        lora_rank=rank if "lora" in parts else 0,
        lora_a_offset=offsets.get("lora_A", -1),
        lora_b_offset=offsets.get("lora_B", -1),
        lora_scale=float(c["lora_scale"]) if "lora" in parts else 0.0,
    )

    g = Graph()
    tx, tdy, tmode = g.input("x", x.shape), g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tstate = g.state(flat)
    tw = -1 if "weights" in parts else g.const("w", c["weights"])
    tb = -1 if "bias" in parts else g.const("b", c["bias"])
    ty = g.output(g.tensor("y", dy.shape))
    fwd_outputs, th = [ty], -1
    if "lora" in parts and kind == ops.LinearKind.CONV_2D:
        th = g.tensor("h", (*dy.shape[:3], rank))
        fwd_outputs.append(th)
    g.op(layer.forward_op, [tx, tw, tb, tstate], fwd_outputs, layer.options())
    tdx = g.output(g.tensor("dx", x.shape))
    g.op(layer.grad_op, [tdy, tx, ty if activation else -1, tw, tstate if parts else -1, tmode, th], [tdx], layer.options())
    out = g.run({tx: x, tdy: dy, tmode: TRAIN, tstate: state_blob(flat)})

    assert relative_error(out[ty], c["y"]) < TOLERANCE
    assert relative_error(out[tdx], c["grad_x"]) < TOLERANCE
    if parts:
        got = state_grads(out[tstate], flat.size)
        for key, offset in offsets.items():
            want = c[f"grad_{key}"].reshape(-1)
            assert relative_error(got[offset : offset + want.size], want) < TOLERANCE, key


@pytest.mark.parametrize("name", golden.case_ids("conv_kernels", "conv_int8"))
def test_int8_layer_matches_stock_kernel_and_backpropagates(name):
    c = golden.case("conv_kernels", "conv_int8", name)
    kind = ops.LinearKind.CONV_2D if name == "conv" else ops.LinearKind.DEPTHWISE_CONV_2D
    x_q, w_q, w_scales, bias_q, a, dy = c["x_q"], c["w_q"], c["w_scales"], c["bias_q"], c["lora_A"], c["dy"]
    x_quant, y_quant, rank = quant(c["x_quant"]), quant(c["y_quant"]), int(c["lora_rank"])
    out_c = w_scales.size
    layer = conv_geometry(kind, x_q.shape, out_c, (3, 3), (2, 2), (1, 1), "SAME", activation=1)
    want = stock_int8_conv(kind, layer, "SAME", x_q, w_q, w_scales, bias_q, x_quant, y_quant)
    # The stock kernel still gives the output TensorFlow's gradient was masked with.
    np.testing.assert_array_equal(want, c["y_stock"])

    params = np.concatenate([a.ravel(), np.zeros(out_c * rank, np.float32)])
    ours = dataclasses.replace(layer, lora_rank=rank, lora_a_offset=0, lora_b_offset=a.size, lora_scale=1.0)
    y_shape = want.shape
    axis = 0 if kind == ops.LinearKind.CONV_2D else 3
    g = Graph()
    tx = g.input("x", x_q.shape, np.int8, quant=x_quant)
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
    tdx = g.output(g.tensor("dx", x_q.shape))
    g.op(ours.grad_op, [tdy, tx, ty, tw, tstate, tmode, th], [tdx], ours.options())
    out = g.run({tx: x_q, tdy: dy, tmode: TRAIN, tstate: state_blob(params)})
    np.testing.assert_array_equal(out[ty], want)  # B = 0: the stock kernel's bytes

    # Input gradient with the layer's own scales, and LoRA B's gradient.
    assert relative_error(out[tdx], c["dx"]) < TOLERANCE
    got_b = state_grads(out[tstate], params.size)[a.size :]
    assert relative_error(got_b, c["grad_lora_B"].ravel()) < TOLERANCE


def test_stock_conv_backprop_runs_only_in_train_mode():
    rng = np.random.default_rng(1)
    layer = conv_geometry(ops.LinearKind.CONV_2D, (1, 5, 5, 2), 3, (3, 3), (1, 1), (1, 1), "SAME")
    g = Graph()
    tdy, tx, tmode = g.input("dy", [1, 5, 5, 3]), g.input("x", [1, 5, 5, 2]), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", [1, 5, 5, 2]))
    w = rng.normal(size=layer.weight_shape()).astype(np.float32)
    g.op(layer.grad_op, [tdy, tx, -1, g.const("w", w), -1, tmode, -1], [tdx], layer.options())
    feeds = {tdy: np.ones((1, 5, 5, 3)), tx: np.zeros((1, 5, 5, 2))}
    trained = g.run({**feeds, tmode: TRAIN})[tdx]
    inferred = g.run({**feeds, tmode: ops.Mode.INFER * np.ones(1, np.int32)})[tdx]
    assert np.abs(trained).sum() > 0
    # With dy = 1 everywhere, the centre pixel's gradient sums every tap of every filter.
    np.testing.assert_allclose(trained[0, 2, 2], w.sum(axis=(0, 1, 2)), rtol=1e-5)
    assert not np.array_equal(inferred, trained)  # inference does no backward work
