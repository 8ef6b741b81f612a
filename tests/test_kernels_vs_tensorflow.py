"""Every backward kernel, run in the TFLM interpreter, against tf.GradientTape.

Each test builds a tiny model around one of our ops, runs it in the
tflite-micro interpreter with our kernels, and compares forward values and
gradients with TensorFlow's on the same inputs: within 1e-5 relative
(float32). Quantized cases compare against TensorFlow on the dequantized
values, which is what "backpropagating with the layer's own quantization
parameters" means. TensorFlow's answers come from tests/golden/kernels.npz
(written by golden/make_golden.py; test_golden_vs_tensorflow.py checks them
against a fresh TensorFlow run), so these tests need no TensorFlow.
"""

from __future__ import annotations

import numpy as np
import pytest

import golden
from graphs import Graph, int8_fully_connected_graph, relative_error, state_blob, state_grads
from tflm_train.converter import ops
from tflm_train.converter.model_ir import Quant

TOLERANCE = 1e-5
TRAIN = np.array([ops.Mode.TRAIN], np.int32)
INFER = np.array([ops.Mode.INFER], np.int32)
PART_ORDER = (("weights", "weights"), ("bias", "bias"), ("lora_A", "lora"), ("lora_B", "lora"))


def cases(kind: str) -> list[str]:
    return golden.case_ids("kernels", kind)


def quant(pair) -> Quant:
    return Quant.of(float(pair[0]), int(pair[1]))


# ---- fully connected ------------------------------------------------------------------------
@pytest.mark.parametrize("name", cases("fc"))
def test_fully_connected_grad_float(name):
    c = golden.case("kernels", "fc", name)
    parts, activation = set(c["parts"].tolist()), ops.Activation(int(c["activation"]))
    x, w, b, dy = c["x"], c["weights"], c["bias"], c["dy"]
    batches, in_features = x.shape
    units, rank = w.shape[0], int(c["lora_rank"])

    params, offsets = [], {}
    for key, part in PART_ORDER:
        if part in parts:
            offsets[key] = sum(p.size for p in params)
            params.append(c[key].reshape(-1))
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
        lora_scale=float(c["lora_scale"]) if "lora" in parts else 0.0,
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

    assert relative_error(out[ty], c["y"]) < TOLERANCE
    assert relative_error(out[tdx], c["grad_x"]) < TOLERANCE
    state_gradients = state_grads(out[tstate], flat.size) if parts else None
    for key, offset in offsets.items():
        want = c[f"grad_{key}"].reshape(-1)
        assert relative_error(state_gradients[offset : offset + want.size], want) < TOLERANCE, key


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
    # In training the bias gradient is dy itself (no activation), summed over the batch.
    np.testing.assert_allclose(state_grads(trained[tstate], 4), np.ones(4), rtol=1e-6)
    np.testing.assert_allclose(trained[tdx], np.ones((1, 4)) @ w, rtol=1e-5)
    assert np.all(state_grads(inferred[tstate], 4) == 0)  # no backward work in inference


@pytest.mark.parametrize("name", cases("fc_int8"))
def test_fully_connected_grad_int8_uses_own_quantization(name):
    c = golden.case("kernels", "fc_int8", name)
    g, tx, tdy, tmode, ty, tdx = int8_fully_connected_graph(
        c["x_q"], c["w_q"], c["w_scales"], c["bias_q"], quant(c["x_quant"]), quant(c["y_quant"]), int(c["activation"]), c["dy"]
    )
    out = g.run({tx: c["x_q"], tdy: c["dy"], tmode: TRAIN})
    # TensorFlow's gradient was taken with the mask of this stock output.
    np.testing.assert_array_equal(out[ty], c["y_stock"])
    assert relative_error(out[tdx], c["dx"]) < TOLERANCE


def test_int8_lora_layer_is_bit_exact_with_stock_kernel_at_init():
    """B = 0: our int8 FULLY_CONNECTED gives the stock kernel's bytes."""
    rng = np.random.default_rng(5)
    batches, in_features, units, rank = 3, 16, 8, 2
    x_quant, y_quant = Quant.of(0.031, 7), Quant.of(0.11, -5)
    w_scales = rng.uniform(0.002, 0.03, size=units).astype(np.float32)
    x_q = rng.integers(-128, 128, size=(batches, in_features)).astype(np.int8)
    w_q = rng.integers(-127, 128, size=(units, in_features)).astype(np.int8)
    bias_q = rng.integers(-3000, 3000, size=units).astype(np.int32)
    stock, tx, tdy, tmode, ty, _ = int8_fully_connected_graph(
        x_q, w_q, w_scales, bias_q, x_quant, y_quant, ops.Activation.RELU, np.zeros((batches, units), np.float32)
    )
    want = stock.run({tx: x_q, tdy: np.zeros((batches, units)), tmode: INFER})[ty]
    assert len(np.unique(want)) > 3  # a real output, not saturated to one value

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
@pytest.mark.parametrize("name", cases("activation"))
def test_activation_grad_float(name):
    c = golden.case("kernels", "activation", name)
    shape = c["dy"].shape
    g = Graph()
    tdy, ty, tmode = g.input("dy", shape), g.input("y", shape), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", shape))
    g.op(ops.ACTIVATION_GRAD, [tdy, ty, tmode], [tdx], ops.activation_grad_options(ops.Activation(int(c["activation"]))))
    got = g.run({tdy: c["dy"], ty: c["y"], tmode: TRAIN})[tdx]
    assert relative_error(got, c["dx"]) < TOLERANCE


@pytest.mark.parametrize("name", cases("activation_int8"))
def test_activation_grad_int8(name):
    """The derivative at the dequantized output, as TensorFlow gives it there."""
    c = golden.case("kernels", "activation_int8", name)
    y_q = c["y_q"]
    g = Graph()
    tdy, tmode = g.input("dy", y_q.shape), g.input("mode", [1], np.int32)
    ty = g.input("y", y_q.shape, np.int8, quant=quant(c["quant"]))
    tdx = g.output(g.tensor("dx", y_q.shape))
    g.op(ops.ACTIVATION_GRAD, [tdy, ty, tmode], [tdx], ops.activation_grad_options(ops.Activation(int(c["activation"]))))
    got = g.run({tdy: c["dy"], ty: y_q, tmode: TRAIN})[tdx]
    assert relative_error(got, c["dx"]) < 2e-5


@pytest.mark.parametrize("name", cases("softmax"))
def test_softmax_grad(name):
    c = golden.case("kernels", "softmax", name)
    y, dy = c["y"], c["dy"]
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    if y.dtype == np.int8:
        ty = g.input("y", y.shape, np.int8, quant=Quant.of(1 / 256, -128))
    else:
        ty = g.input("y", y.shape)
    tdx = g.output(g.tensor("dx", dy.shape))
    g.op(ops.SOFTMAX_GRAD, [tdy, ty, tmode], [tdx], ops.softmax_grad_options(float(c["beta"])))
    got = g.run({tdy: dy, ty: y, tmode: TRAIN})[tdx]
    assert relative_error(got, c["dx"]) < TOLERANCE


# ---- losses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", cases("loss"))
def test_loss_value_and_gradient(name):
    c = golden.case("kernels", "loss", name)
    logits, target = c["logits"], c["target"]
    g = Graph()
    tp, tmode = g.input("logits", logits.shape), g.input("mode", [1], np.int32)
    tt = g.input("target", target.shape, target.dtype)
    tloss, tgrad = g.output(g.tensor("loss", [1])), g.output(g.tensor("grad", logits.shape))
    g.op(ops.LOSS, [tp, tt, tmode], [tloss, tgrad], ops.loss_options(str(c["kind"])))
    out = g.run({tp: logits, tt: target, tmode: TRAIN})
    assert relative_error(out[tloss], c["loss"]) < TOLERANCE
    assert relative_error(out[tgrad], c["grad"]) < TOLERANCE


def test_cross_entropy_on_int8_logits():
    c = golden.case("kernels", "loss_int8", "ce")
    q = c["logits_q"]
    g = Graph()
    tp = g.input("logits", q.shape, np.int8, quant=quant(c["quant"]))
    tt, tmode = g.input("target", [1], np.int32), g.input("mode", [1], np.int32)
    tloss, tgrad = g.output(g.tensor("loss", [1])), g.output(g.tensor("grad", q.shape))
    g.op(ops.LOSS, [tp, tt, tmode], [tloss, tgrad], ops.loss_options("ce"))
    out = g.run({tp: q, tt: c["target"], tmode: TRAIN})
    assert relative_error(out[tloss], c["loss"]) < TOLERANCE
    assert relative_error(out[tgrad], c["grad"]) < TOLERANCE


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
@pytest.mark.parametrize("name", cases("adapter"))
def test_adapter_forward_and_grad(name):
    c = golden.case("kernels", "adapter", name)
    down, down_bias, up, up_bias, dy = c["down"], c["down_bias"], c["up"], c["up_bias"], c["dy"]
    width, features = down.shape
    batches = dy.shape[0]
    flat = np.concatenate([down.ravel(), down_bias, up.ravel(), up_bias])
    layer = ops.AdapterLayer(features, width, 0, down.size, down.size + width, down.size + width + up.size)
    quantized = c["x"].dtype == np.int8

    g = Graph()
    x_quant = Quant.of(0.04, -10) if quantized else None
    dtype = np.int8 if quantized else np.float32
    tx = g.input("x", [batches, features], dtype, quant=x_quant)
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tstate = g.state(flat)
    ty = g.output(g.tensor("y", [batches, features], dtype, quant=x_quant))
    th = g.tensor("hidden", [batches, width])
    g.op(ops.ADAPTER, [tx, tstate], [ty, th], layer.options())
    tdx = g.output(g.tensor("dx", [batches, features]))
    g.op(ops.ADAPTER_GRAD, [tdy, tx, th, tstate, tmode], [tdx], layer.options())
    out = g.run({tx: c["x"], tdy: dy, tmode: TRAIN, tstate: state_blob(flat)})

    if quantized:
        assert np.max(np.abs(out[ty].astype(int) - c["y"].astype(int))) <= 1
    else:
        assert relative_error(out[ty], c["y"]) < TOLERANCE
    assert relative_error(out[tdx], c["dx"]) < TOLERANCE
    assert relative_error(state_grads(out[tstate], flat.size), c["grad_params"]) < TOLERANCE
