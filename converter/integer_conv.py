"""`convert --arithmetic int8` through convolutions: the CONV_2D /
DEPTHWISE_CONV_2D and pooling parts of integer training (converter/integer.py
builds the rest and calls in here for every operator of the chain that is not
a FULLY_CONNECTED).

  trainable     a conv layer's bias (--method bias): an int16 delta on the
                frozen int32 bias in 1/256 output steps, as for FULLY_CONNECTED
  forward       TFLMT_CONV_INT: the stock int8 convolution plus the delta in
                output units (a zero delta: the stock bytes); a layer that only
                passes the gradient keeps its stock operator
  backward      TFLMT_CONV_INT_GRAD: bias gradient (int64 sum over positions,
                one rescale) and the input gradient (the transposed
                convolution of dy, per-channel weight scales folded into dy as
                Q14 ratios); TFLMT_POOL_INT_GRAD for MAX_POOL_2D,
                AVERAGE_POOL_2D and MEAN over height and width; RESHAPE and
                SQUEEZE pass the gradient's bytes on unchanged
Kernels: tflm_ops/kernels/conv_int_grad.cc, math tflm_ops/reference/conv_int_grad.h.
"""

from __future__ import annotations

import math

import numpy as np
from tflm_train.converter import ops
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.integer_quant import (
    INT8_ACTIVATIONS,
    activation_range,
    i32s,
    quantize_multiplier,
)
from tflm_train.converter.layers import linear_target, same_padding
from tflm_train.converter.model_ir import Model

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
POOL_OPS = ("MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN")
PASS_THROUGH_OPS = ("RESHAPE", "SQUEEZE")  # the gradient's bytes are the same
CROSSABLE_OPS = CONV_OPS + POOL_OPS + PASS_THROUGH_OPS
BIAS_STEPS_PER_OUTPUT_STEP = 256  # as converter/integer.py's FULLY_CONNECTED bias delta
GRAD_FRACTION_BITS = 8  # reference/lora_int.h kGradFractionBits
_ACTIVATIONS = INT8_ACTIVATIONS
_POOL_KIND = {"MAX_POOL_2D": 0, "AVERAGE_POOL_2D": 1, "MEAN": 1}  # reference::IntPoolKind




def _quant(model: Model, tensor: int, what: str, index: int):
    q = model.quant(tensor)
    if q is None:
        raise ConversionError(f"operator {index}: its {what} has no quantization; --arithmetic int8 needs an int8 model")
    return q


def _int8(model: Model, tensor: int, what: str, index: int) -> None:
    if model.dtype(tensor) != np.int8:
        raise ConversionError(f"operator {index}: {what} is {model.dtype(tensor)}; --arithmetic int8 needs int8 layers")


def _nhwc(model: Model, tensor: int, index: int) -> list[int]:
    shape = [int(v) for v in model.shape(tensor)]
    if len(shape) != 4:
        raise ConversionError(f"operator {index}: --arithmetic int8 backpropagates through NHWC tensors only")
    return shape


def crossable(kind: str) -> bool:
    """Whether integer training backpropagates through an operator of this kind."""
    return kind in CROSSABLE_OPS


class ConvStep:
    """One int8 CONV_2D / DEPTHWISE_CONV_2D of the chain and its fixed-point constants."""

    def __init__(self, model: Model, index: int):
        t = linear_target(model, index)
        self.index, self.target = index, t
        for tensor, what in ((t.x, "input"), (t.weights, "filter"), (t.y, "output")):
            _int8(model, tensor, what, index)
        if t.bias >= 0 and model.dtype(t.bias) != np.int32:
            raise ConversionError(f"operator {index}: bias is {model.dtype(t.bias)}, expected int32")
        if t.activation not in _ACTIVATIONS:
            raise ConversionError(f"operator {index}: fused activation {t.activation} is not supported by --arithmetic int8")
        self.depthwise = t.kind == ops.LinearKind.DEPTHWISE_CONV_2D
        qx, qw, qy = (_quant(model, tensor, what, index) for tensor, what in ((t.x, "input"), (t.weights, "filter"), (t.y, "output")))
        self.sx, self.zx = float(qx.scale[0]), int(qx.zero_point[0])
        self.sy, self.zy = float(qy.scale[0]), int(qy.zero_point[0])
        units = t.units
        self.sw = np.broadcast_to(qw.scale.astype(np.float32), (units,)).astype(np.float64)
        # The stock kernel's requantization per channel (as converter/integer.py's FULLY_CONNECTED).
        requant = [quantize_multiplier(self.sx * float(np.float32(s)) / self.sy) for s in self.sw]
        self.requant = np.asarray(requant, np.int32).reshape(units, 2)
        self.act_min, self.act_max = activation_range(self.target.activation, self.zy, self.sy)
        self.sw_max = float(self.sw.max())
        self.ratios = np.floor(self.sw / self.sw_max * 16384 + 0.5).astype(np.int32)
        self.dx_base = math.floor(math.log2(self.sw_max)) - 8  # 8 bits below a weight step
        x_shape, layer = _nhwc(model, t.x, index), t.layer
        self.geometry = (
            x_shape[0], x_shape[1], x_shape[2], layer.in_channels, layer.out_size[0], layer.out_size[1], units,
            layer.kernel[0], layer.kernel[1], layer.stride[0], layer.stride[1], layer.dilation[0], layer.dilation[1],
            layer.padding[0], layer.padding[1], layer.depth_multiplier,
        )
        self.s_bias = self.sy / BIAS_STEPS_PER_OUTPUT_STEP
        self.bias_entry = None

    def pass_range(self) -> tuple[int, int]:
        """The gradient passes where pass_min < y < pass_max (no activation: always)."""
        if self.target.activation == ops.Activation.NONE:
            return -129, 128
        if self.target.activation == ops.Activation.RELU:
            return self.act_min, 128
        return self.act_min, self.act_max


class PoolStep:
    """A MAX_POOL_2D, AVERAGE_POOL_2D or MEAN (over height and width) of the chain."""

    def __init__(self, model: Model, index: int, kind: str):
        op = model.operators[index]
        x, y = model.inputs_of(op)[0], model.outputs_of(op)[0]
        self.index, self.kind, self.x = index, kind, x
        _int8(model, x, "input", index)
        shape = _nhwc(model, x, index)
        batches, in_h, in_w, channels = shape
        if kind == "MEAN":
            axes = model.constant(model.inputs_of(op)[1]) if len(model.inputs_of(op)) > 1 else None
            if axes is None or sorted(int(a) % 4 for a in np.ravel(axes)) != [1, 2]:
                raise ConversionError(f"operator {index}: --arithmetic int8 backpropagates through a MEAN over height and width only")
            k_h, k_w, stride, pad, out_h, out_w = in_h, in_w, (1, 1), (0, 0), 1, 1
        else:
            options = op.builtinOptions
            if options is None:
                raise ConversionError(f"operator {index}: {kind} has no options (the model is corrupt)")
            if int(options.fusedActivationFunction) != 0:
                raise ConversionError(f"operator {index}: a fused activation on {kind} is not supported by --arithmetic int8")
            k_h, k_w = int(options.filterHeight), int(options.filterWidth)
            stride = (int(options.strideH), int(options.strideW))
            out_h, top = same_padding(in_h, k_h, stride[0], 1, options.padding)
            out_w, left = same_padding(in_w, k_w, stride[1], 1, options.padding)
            pad = (top, left)
        if int(np.prod(model.shape(y))) != batches * out_h * out_w * channels:
            raise ConversionError(f"operator {index}: {kind} output does not follow from its window")
        self.geometry = (batches, in_h, in_w, channels, out_h, out_w, channels, k_h, k_w,
                         stride[0], stride[1], 1, 1, pad[0], pad[1], 1)


def chain_step(model: Model, index: int):
    """The integer-training view of a non-FULLY_CONNECTED operator of the chain."""
    kind = model.op_type(model.operators[index])
    if kind in CONV_OPS:
        return ConvStep(model, index)
    if kind in POOL_OPS:
        return PoolStep(model, index, kind)
    return None  # RESHAPE / SQUEEZE: nothing to do


def eligible(method: str) -> tuple[tuple[str, ...], str]:
    """The operator kinds `method` may target in integers, and their name for
    messages: conv layers train their bias only (no integer LoRA on them)."""
    if method == "bias":
        return ("FULLY_CONNECTED",) + CONV_OPS, "FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D"
    return ("FULLY_CONNECTED",), "FULLY_CONNECTED (integer LoRA; conv layers train with --method bias)"


def add_forward(model: Model, step: ConvStep, layout, state: int) -> dict:
    """Replaces a training conv layer by TFLMT_CONV_INT with an int16 bias delta."""
    t = step.target
    step.bias_entry = layout.add_int16(f"{t.short}/bias_delta", "bias_delta", t.short, np.zeros(t.units), step.s_bias)
    requant = model.add_tensor(f"{t.name}/requant", [t.units, 2], np.int32, data=step.requant)
    options = bytes([ops.OPTIONS_VERSIONS[ops.CONV_INT]]) + i32s(
        int(step.depthwise), *step.geometry, step.bias_entry.offset, step.zx, step.zy, step.act_min, step.act_max,
        *quantize_multiplier(step.s_bias / step.sy),
    )
    new_op = model.make_op(ops.CONV_INT, [t.x, t.weights, t.bias, state, requant], [t.y], custom_options=options)
    model.main.operators[model.main.operators.index(t.op)] = new_op
    return {"index": step.index, "name": t.short, "op": model.op_type(t.op), "params": step.bias_entry.size,
            "activation": int(t.activation), "first_offset": step.bias_entry.offset}


def _grad_tensors(model: Model, tensor: int) -> tuple[int, int]:
    dx = model.add_tensor(model.tensor_name(tensor) + "/grad_int", list(model.shape(tensor)), np.int16)
    dx_exp = model.add_tensor(model.tensor_name(tensor) + "/grad_exponent", [1], np.int32)
    return dx, dx_exp


def add_backward(model: Model, index: int, step, dy: int, dy_exp: int, state: int, mode: int,
                 needs_dx: bool) -> tuple[int, int]:
    """Appends the backward op of chain operator `index`; returns the gradient
    (int16 tensor, exponent tensor) of its input."""
    if step is None:  # RESHAPE / SQUEEZE: the same values in another shape
        return dy, dy_exp
    if isinstance(step, PoolStep):
        outputs = list(_grad_tensors(model, step.x))
        x_in = step.x if step.kind == "MAX_POOL_2D" else -1
        options = bytes([ops.OPTIONS_VERSIONS[ops.POOL_INT_GRAD]]) + i32s(_POOL_KIND[step.kind], *step.geometry)
        model.append_op(ops.POOL_INT_GRAD, [dy, dy_exp, x_in, mode], outputs, custom_options=options)
        return outputs[0], outputs[1]
    t = step.target
    outputs = list(_grad_tensors(model, t.x)) if needs_dx else []
    trains = step.bias_entry is not None
    unit = 2.0**-GRAD_FRACTION_BITS  # an accumulator counts this many parameter steps
    grad_bias = quantize_multiplier(1.0 / (step.s_bias * unit)) if trains else (0, 0)
    pass_min, pass_max = step.pass_range()
    options = bytes([ops.OPTIONS_VERSIONS[ops.CONV_INT_GRAD]]) + i32s(
        int(step.depthwise), *step.geometry, step.bias_entry.offset if trains else -1, pass_min, pass_max,
        *grad_bias, *quantize_multiplier(step.sw_max / 2.0**step.dx_base), step.dx_base,
    )
    ratios = model.add_tensor(f"{t.name}/weight_ratios", [t.units], np.int32, data=step.ratios)
    y_in = t.y if t.activation != ops.Activation.NONE else -1
    model.append_op(ops.CONV_INT_GRAD, [dy, dy_exp, y_in, t.weights, state if trains else -1, mode, ratios],
                    outputs, custom_options=options)
    return (outputs[0], outputs[1]) if outputs else (-1, -1)


def merge_layer(model: Model, op, metadata: dict, params: np.ndarray) -> ops.LinearLayer:
    """A TFLMT_CONV_INT as the LinearLayer converter/merge.py folds: its
    geometry from the options, the full bias (frozen + trained delta) written
    into `params` at the delta's place."""
    values = [int(v) for v in np.frombuffer(bytes(op.customOptions)[1:], "<i4")]
    depthwise, geometry, bias_offset = values[0], values[1:17], values[17]
    _b, _ih, _iw, in_c, out_h, out_w, out_c, k_h, k_w, s_h, s_w, d_h, d_w, pad_top, pad_left, multiplier = geometry
    activation = {entry["first_offset"]: entry["activation"] for entry in metadata["adapted"]}[bias_offset]
    x, weights, bias = model.inputs_of(op)[:3]
    if bias >= 0:
        params[bias_offset : bias_offset + out_c] += model.constant(bias).astype(np.float64) * (
            float(model.quant(x).scale[0]) * model.quant(weights).scale.astype(np.float64))
    kind = ops.LinearKind.DEPTHWISE_CONV_2D if depthwise else ops.LinearKind.CONV_2D
    return ops.LinearLayer(kind, in_c, out_c, activation, kernel=(k_h, k_w), stride=(s_h, s_w), dilation=(d_h, d_w),
                           padding=(pad_top, pad_left), depth_multiplier=multiplier, out_size=(out_h, out_w),
                           bias_offset=bias_offset)
