"""Pooling, MEAN, PAD, CONCATENATION and broadcasting ADD/SUB/MUL gradients
against tf.GradientTape (tests/golden/shape_kernels.npz, written by
golden/make_golden.py). Each test runs the stock forward op and our gradient
op together in the TFLM interpreter, as a converted model does."""

from __future__ import annotations

import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

import golden
from graphs import PADDING, Graph, relative_error
from tflm_train.converter import ops
from tflm_train.converter.layers import same_padding
from tflm_train.converter.model_ir import Quant

TOLERANCE = 1e-5
TRAIN = np.array([ops.Mode.TRAIN], np.int32)


def cases(kind: str) -> list[str]:
    return golden.case_ids("shape_kernels", kind)


def builtin(g: Graph, name: str, inputs, outputs, options, options_type):
    g.model.append_op(name, inputs, outputs, builtin_options=options, builtin_options_type=options_type)


@pytest.mark.parametrize("name", cases("pool"))
def test_pool_grad(name):
    c = golden.case("shape_kernels", "pool", name)
    kind, padding = str(c["kind"]), str(c["padding"])
    kernel, stride = tuple(c["kernel"].tolist()), tuple(c["stride"].tolist())
    x, dy = c["x"], c["dy"]
    x_shape = x.shape
    out_h, pad_top = same_padding(x_shape[1], kernel[0], stride[0], 1, PADDING[padding])
    out_w, pad_left = same_padding(x_shape[2], kernel[1], stride[1], 1, PADDING[padding])
    y_shape = (x_shape[0], out_h, out_w, x_shape[3])
    assert dy.shape == y_shape
    quantized = x.dtype == np.int8
    quant = Quant.of(float(c["quant"][0]), int(c["quant"][1])) if quantized else None
    g = Graph()
    tx = g.input("x", x_shape, x.dtype, quant=quant)
    tdy, tmode = g.input("dy", y_shape), g.input("mode", [1], np.int32)
    ty = g.output(g.tensor("y", y_shape, x.dtype, quant=quant))
    options = schema.Pool2DOptionsT()
    options.padding, (options.filterHeight, options.filterWidth) = PADDING[padding], kernel
    options.strideH, options.strideW = stride
    op_name = "AVERAGE_POOL_2D" if kind == "average" else "MAX_POOL_2D"
    builtin(g, op_name, [tx], [ty], options, schema.BuiltinOptions.Pool2DOptions)
    tdx = g.output(g.tensor("dx", x_shape))
    blob = ops.pool_grad_options(kind, x_shape, y_shape, kernel, stride, (pad_top, pad_left))
    inputs = [tdy, tx, ty, tmode] if kind == "max" else [tdy, -1, -1, tmode]
    g.op(ops.POOL_GRAD, inputs, [tdx], blob)
    out = g.run({tx: x, tdy: dy, tmode: TRAIN})
    assert relative_error(out[tdx], c["dx"]) < TOLERANCE


@pytest.mark.parametrize("name", cases("mean"))
def test_mean_grad(name):
    c = golden.case("shape_kernels", "mean", name)
    dy, x_shape = c["dy"], c["dx"].shape
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", x_shape))
    g.op(ops.MEAN_GRAD, [tdy, tmode], [tdx], ops.mean_grad_options(x_shape, c["axes"].tolist()))
    got = g.run({tdy: dy, tmode: TRAIN})[tdx]
    assert relative_error(got, c["dx"]) < TOLERANCE


def test_pad_grad_is_a_crop():
    c = golden.case("shape_kernels", "pad", "crop")
    dy, x_shape, paddings = c["dy"], c["dx"].shape, c["paddings"]
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tdx = g.output(g.tensor("dx", x_shape))
    g.op(ops.CROP, [tdy, tmode], [tdx], ops.crop_options(dy.shape, [int(p[0]) for p in paddings], x_shape))
    assert relative_error(g.run({tdy: dy, tmode: TRAIN})[tdx], c["dx"]) < TOLERANCE


@pytest.mark.parametrize("name", cases("concatenation"))
def test_concatenation_grad(name):
    c = golden.case("shape_kernels", "concatenation", name)
    dy, axis = c["dy"], int(c["axis"])
    wants = [c[f"dx{i}"] for i in range(len(c) - 2)]
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    offset, outputs = 0, []
    for want in wants:
        begin = [0, 0, 0, 0]
        begin[axis % 4] = offset
        t = g.output(g.tensor(f"dx{len(outputs)}", want.shape))
        g.op(ops.CROP, [tdy, tmode], [t], ops.crop_options(dy.shape, begin, want.shape))
        outputs.append(t)
        offset += want.shape[axis % 4]
    assert offset == dy.shape[axis % 4]  # the parts tile the output
    out = g.run({tdy: dy, tmode: TRAIN})
    for t, want in zip(outputs, wants):
        assert relative_error(out[t], want) < TOLERANCE


@pytest.mark.parametrize("name", cases("broadcast"))
def test_broadcast_grad(name):
    c = golden.case("shape_kernels", "broadcast", name)
    kind, a, b, dy = str(c["kind"]), c["a"], c["b"], c["dy"]
    out_shape = list(dy.shape)
    rank = len(out_shape)

    def aligned(shape):
        return [1] * (rank - len(shape)) + list(shape)

    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    ta, tb = g.input("a", a.shape), g.input("b", b.shape)
    tda, tdb = g.output(g.tensor("da", a.shape)), g.output(g.tensor("db", b.shape))
    first = "multiply" if kind == "multiply" else "add"
    second = kind if kind != "add" else "add"
    g.op(ops.BROADCAST_GRAD, [tdy, tb if kind == "multiply" else -1, tmode], [tda],
         ops.broadcast_grad_options(first, out_shape, aligned(a.shape), aligned(b.shape)))
    g.op(ops.BROADCAST_GRAD, [tdy, ta if kind == "multiply" else -1, tmode], [tdb],
         ops.broadcast_grad_options(second, out_shape, aligned(b.shape), aligned(a.shape)))
    out = g.run({tdy: dy, tmode: TRAIN, ta: a, tb: b})
    assert relative_error(out[tda], c["da"]) < TOLERANCE
    assert relative_error(out[tdb], c["db"]) < TOLERANCE


def test_broadcast_mul_grad_with_int8_operand():
    c = golden.case("shape_kernels", "broadcast_int8", "multiply")
    other_q, dy, a_shape = c["other_q"], c["dy"], c["a_shape"].tolist()
    g = Graph()
    tdy, tmode = g.input("dy", dy.shape), g.input("mode", [1], np.int32)
    tother = g.input("other", other_q.shape, np.int8, quant=Quant.of(float(c["quant"][0]), int(c["quant"][1])))
    tda = g.output(g.tensor("da", a_shape))
    g.op(ops.BROADCAST_GRAD, [tdy, tother, tmode], [tda],
         ops.broadcast_grad_options("multiply", a_shape, a_shape, list(other_q.shape)))
    assert relative_error(g.run({tdy: dy, tmode: TRAIN, tother: other_q})[tda], c["da"]) < TOLERANCE
