"""Test cases for firmware/kernel_runner, recorded on x86 in the TFLM interpreter.

A case is a small graph of tflm-train's custom ops: every custom op of a
converted model in execution order, or a few hand-built ops (mostly one kind).
It runs once in the tflite-micro wheel with every tensor preserved; the case
file then carries what the kernels need to run the same graph without TFLM:
the tensors (constants with their bytes), the custom nodes, and for each
invocation the tensors to set first: the graph inputs and what TFLM's builtin
ops computed (the runner has no builtin ops). The runner writes the bytes of
every "result" tensor (written by a custom op, or a variable) after each
invocation; the wheel's own values are kept here to check the x86 runner.

File format (little-endian; every field and byte string padded to 4 bytes):
  "TKRC" u32 version (1) u32 cases, then per case:
    u32 case bytes (after this field)
    u32 name length, name
    u32 tensors, per tensor:
      u32 type (TfLiteType), u32 flags (1 variable, 2 constant, 8 result),
      u32 rank, i32 dims[rank], f32 scale, i32 zero point,
      i32 quantized dimension, u32 channels, f32 scales[channels] if > 1,
      u32 bytes, the bytes if constant
    u32 nodes, per node: u32 length, op name, u32 length, options,
      u32 inputs, i32 tensor[inputs] (-1: left out), u32 outputs, i32 tensor[outputs]
    u32 invocations, per invocation: u32 flags (1: reset first),
      u32 feeds, per feed: u32 tensor, its bytes

    python tests/device/make_kernel_cases.py OUT.bin   # writes a case file
"""

from __future__ import annotations

import dataclasses
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tflite_micro.python.tflite_micro import runtime as tflm_runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train import plugin
from tflm_train.converter import ops
from tflm_train.converter.config import ConvertConfig
from tflm_train.converter.convert import convert
from tflm_train.converter.model_ir import Model, Quant
from tflm_train.converter.ops import OptimizerConfig
from tflm_train.converter.state_format import HEADER_BYTES, Header
from tflm_train.converter.training_info import training_info
from tflm_train.runtime import Interpreter
from tflm_train.trainer import quantize

EXAMPLES = Path(__file__).resolve().parents[2] / "tflm_train" / "examples"
VERSION = 1
VARIABLE, CONSTANT, RESULT = 1, 2, 8
# numpy dtype -> TfLiteType (port::DataType)
TFLITE_TYPES = {np.float32: 1, np.int32: 2, np.uint8: 3, np.int64: 4, np.bool_: 6, np.int16: 7, np.int8: 9}


@dataclass
class Invocation:
    feeds: dict[int, np.ndarray]  # graph input position -> value
    reset: bool = False


@dataclass
class Case:
    name: str
    blob: bytes  # the case as the runner reads it (without the length field)
    expected: bytes  # the wheel's result bytes, all invocations
    kernels: set[str] = field(default_factory=set)
    # (invocation, tensor name, op that writes it or "variable", bytes), in output order
    layout: list[tuple[int, str, str, int]] = field(default_factory=list)

    def first_difference(self, got: bytes) -> str:
        """Where `got` first differs from `expected`, and by how much there."""
        position = 0
        for invocation, tensor, writer, nbytes in self.layout:
            a, b = got[position:position + nbytes], self.expected[position:position + nbytes]
            if a != b:
                return f"invocation {invocation}, tensor {tensor} ({writer}): {sum(x != y for x, y in zip(a, b))} bytes differ"
            position += nbytes
        return "no difference" if got == self.expected else "lengths differ"


def _u32(*values) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def _i32(*values) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def _padded(data: bytes) -> bytes:
    return bytes(data) + bytes(-len(data) % 4)


def _string(data: bytes) -> bytes:
    return _u32(len(data)) + _padded(data)


def record(name: str, model_bytes: bytes, invocations: list[Invocation]) -> Case:
    """Runs the model in the wheel (every tensor kept) and builds its case."""
    model = Model.from_bytes(model_bytes)
    custom_names = set(plugin.op_names())
    nodes = [op for op in model.operators if model.op_type(op) in custom_names]
    used = sorted({int(t) for op in nodes for t in list(op.inputs) + list(op.outputs) if t >= 0})
    new_index = {t: i for i, t in enumerate(used)}
    written = {int(t) for op in nodes for t in op.outputs if t >= 0}
    graph_inputs = [int(t) for t in model.main.inputs]

    flags, out = {}, bytearray()
    out += _u32(len(used))
    for t in used:
        tensor = model.tensors[t]
        dtype = np.dtype(model.dtype(t))
        constant = model.constant(t) if not tensor.isVariable else None
        flags[t] = (VARIABLE if tensor.isVariable else 0) | (CONSTANT if constant is not None else 0)
        flags[t] |= RESULT if (t in written or tensor.isVariable) else 0
        shape = model.shape(t)
        quant = model.quant(t) or Quant.of(0.0, 0)
        channels = int(quant.scale.size)
        out += _u32(TFLITE_TYPES[dtype.type], flags[t], len(shape)) + _i32(*shape)
        out += struct.pack("<fii", float(quant.scale[0]), int(quant.zero_point[0]), int(quant.axis))
        out += _u32(channels) + (struct.pack(f"<{channels}f", *quant.scale) if channels > 1 else b"")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        out += _u32(nbytes)
        if constant is not None:
            out += _padded(np.ascontiguousarray(constant).astype(dtype.newbyteorder("<")).tobytes())
    out += _u32(len(nodes))
    for op in nodes:
        options = bytes(op.customOptions) if op.customOptions is not None else b""
        inputs = [new_index[int(t)] if t >= 0 else -1 for t in op.inputs]
        outputs = [new_index[int(t)] for t in op.outputs]
        out += _string(model.op_type(op).encode()) + _string(options)
        out += _u32(len(inputs)) + _i32(*inputs) + _u32(len(outputs)) + _i32(*outputs)

    plugin.library()
    interpreter = tflm_runtime.Interpreter.from_bytes(
        model_bytes,
        custom_op_registerers=[plugin.REGISTERER],
        arena_size=4 * 1024 * 1024,
        intrepreter_config=tflm_runtime.InterpreterConfig.kPreserveAllTensors,
    )
    expected, layout = bytearray(), []
    writer = {int(t): model.op_type(op) for op in nodes for t in op.outputs if t >= 0}
    out += _u32(len(invocations))
    for number, invocation in enumerate(invocations):
        if invocation.reset:
            interpreter.reset()
        for position, value in invocation.feeds.items():
            details = interpreter.get_input_details(position)
            interpreter.set_input(np.asarray(value, details["dtype"]).reshape(details["shape"]), position)
        interpreter.invoke()
        values = {t: interpreter.GetTensor(t, 0)["tensor_data"] for t in used}
        # A variable's value after the invocation is not what was loaded.
        fed_variables = {graph_inputs[p]: v for p, v in invocation.feeds.items()
                         if model.tensors[graph_inputs[p]].isVariable}
        loaded = {t: np.asarray(v, model.dtype(t)) for t, v in fed_variables.items()}
        # Set before the custom ops run: graph inputs and builtin outputs
        # (never constants, never what a custom op writes; variables only
        # when this invocation writes them, as a state load does).
        feeds = [t for t in used if not flags[t] & CONSTANT and t not in written
                 and (not flags[t] & VARIABLE or t in fed_variables)]
        out += _u32(1 if invocation.reset else 0, len(feeds))
        for t in feeds:
            out += _u32(new_index[t]) + _padded(np.ascontiguousarray(loaded.get(t, values[t])).tobytes())
        for t in used:
            if flags[t] & RESULT:
                data = np.ascontiguousarray(values[t]).tobytes()
                expected += data
                layout.append((number, model.tensor_name(t), writer.get(t, "variable"), len(data)))
    blob = _string(name.encode()) + bytes(out)
    return Case(name, blob, bytes(expected), {model.op_type(op) for op in nodes}, layout)


def write_cases(cases: list[Case], path: Path) -> None:
    data = b"TKRC" + _u32(VERSION, len(cases))
    for case in cases:
        data += _u32(len(case.blob)) + case.blob
    Path(path).write_bytes(data)


# ---- converted models ---------------------------------------------------------------------------
def _training_invocations(model_bytes: bytes, x: np.ndarray, y: np.ndarray, lr: float) -> list[Invocation]:
    """Three training steps, evaluate, infer, then Reset() and one more step."""
    info = training_info(Model.from_bytes(model_bytes))
    interpreter = Interpreter(model_bytes)
    x_details = interpreter.input_details(0)
    target_details = interpreter.input_details(info.input_index("target"))

    def step(i: int, mode: ops.Mode, reset: bool = False) -> Invocation:
        return Invocation(
            {
                0: quantize(x[i][None], x_details),
                info.input_index("target"): quantize(np.asarray(y[i])[None], target_details),
                info.input_index("learning_rate"): np.array([lr], np.float32),
                info.input_index("mode"): np.array([int(mode)], np.int32),
            },
            reset,
        )

    train = ops.Mode.TRAIN
    return [step(0, train), step(1, train), step(2, train), step(3, ops.Mode.EVALUATE),
            step(4, ops.Mode.INFER), step(5, train, reset=True), step(6, train)]


def converted_case(name: str, example: str, precision: str, lr: float = 0.05, **config) -> Case:
    optimizer = config.pop("optimizer", OptimizerConfig())
    base = (EXAMPLES / example / f"model_{precision}.tflite").read_bytes()
    converted = convert(base, ConvertConfig(optimizer=optimizer, **config)).model
    data = np.load(EXAMPLES / example / "user_train.npz")
    x, y = data["x"], data["y"]
    if config.get("loss") == "mse":  # one-hot targets for a regression loss
        y = np.eye(int(y.max()) + 1, dtype=np.float32)[y]
    return record(name, converted, _training_invocations(converted, x, y, lr))


def distill_case() -> Case:
    """Distillation (convert --distill): target rows [label, weight, teacher probabilities],
    with the weight varied so that both the soft and the plain cross-entropy term run."""
    base = (EXAMPLES / "digits" / "model_float.tflite").read_bytes()
    converted = convert(base, ConvertConfig(distill=2.0)).model
    data = np.load(EXAMPLES / "digits" / "user_train.npz")
    x, y = data["x"], data["y"]
    classes = int(y.max()) + 1
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 2.0, (len(x), classes))
    teacher = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    weights = np.array([0.5, 0.0, 1.0, 0.25, 0.5, 0.75, 0.5])[np.arange(len(x)) % 7]
    targets = np.concatenate([y[:, None].astype(np.float32), weights[:, None], teacher], axis=1).astype(np.float32)
    return record("digits_float_lora_distill", converted, _training_invocations(converted, x, targets, 0.05))


# ---- hand-built graphs --------------------------------------------------------------------------
class _Graph:
    """A model of a few ops; every graph input is fed in every invocation."""

    def __init__(self):
        self.model = Model.empty()
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def input(self, name, shape, dtype=np.float32, quant=None, is_variable=False) -> int:
        t = self.model.add_tensor(name, shape, dtype, quant=quant, is_variable=is_variable)
        self.inputs.append(t)
        return t

    def const(self, name, values, quant=None) -> int:
        values = np.asarray(values)
        return self.model.add_tensor(name, values.shape, values.dtype, data=values, quant=quant)

    def output(self, name, shape, dtype=np.float32, quant=None) -> int:
        t = self.model.add_tensor(name, shape, dtype, quant=quant)
        self.outputs.append(t)
        return t

    def op(self, op_type, inputs, outputs, options=None, **kwargs) -> None:
        self.model.append_op(op_type, inputs, outputs, custom_options=options, **kwargs)

    def build(self) -> bytes:
        self.model.main.inputs = list(self.inputs)
        self.model.main.outputs = list(self.outputs)
        return self.model.to_bytes()


def _modes(g: _Graph, feeds_of_mode) -> list[Invocation]:
    """TRAIN, INFER, TRAIN: the gradient ops write nothing in inference."""
    return [Invocation(feeds_of_mode(m)) for m in (ops.Mode.TRAIN, ops.Mode.INFER, ops.Mode.TRAIN)]


def _mode(m) -> np.ndarray:
    return np.array([int(m)], np.int32)


def activation_grad_case(quantized: bool) -> Case:
    rng = np.random.default_rng(1 + quantized)
    acts = [ops.Activation.RELU, ops.Activation.RELU6, ops.Activation.RELU_N1_TO_1, ops.Activation.TANH,
            ops.Activation.LOGISTIC]
    quants = {ops.Activation.RELU: Quant.of(0.05, -128), ops.Activation.RELU6: Quant.of(6 / 255, -128),
              ops.Activation.RELU_N1_TO_1: Quant.of(2 / 255, 0), ops.Activation.TANH: Quant.of(1 / 128, 0),
              ops.Activation.LOGISTIC: Quant.of(1 / 256, -128)}
    g, values = _Graph(), {}
    shape = (2, 9)
    tmode = g.input("mode", [1], np.int32)
    for act in acts:
        tdy = g.input(f"dy{int(act)}", shape)
        if quantized:
            ty = g.input(f"y{int(act)}", shape, np.int8, quant=quants[act])
            values[ty] = rng.integers(-128, 128, size=shape).astype(np.int8)
        else:
            ty = g.input(f"y{int(act)}", shape)
            values[ty] = (rng.normal(size=shape) * 2).astype(np.float32)
            if act == ops.Activation.LOGISTIC:
                values[ty] = 1 / (1 + np.exp(-values[ty]))
        values[tdy] = rng.normal(size=shape).astype(np.float32)
        g.op(ops.ACTIVATION_GRAD, [tdy, ty, tmode], [g.output(f"dx{int(act)}", shape)],
             ops.activation_grad_options(act))
    model = g.build()
    return record(f"activation_grad_{'int8' if quantized else 'float'}", model, _modes(g, lambda m: {
        p: (_mode(m) if t == tmode else values[t]) for p, t in enumerate(g.inputs)}))


def softmax_grad_case(quantized: bool) -> Case:
    rng = np.random.default_rng(3 + quantized)
    shape = (3, 10)
    g, values = _Graph(), {}
    tmode = g.input("mode", [1], np.int32)
    for beta in (1.0, 0.6):
        tdy = g.input(f"dy{beta}", shape)
        logits = rng.normal(size=shape) * 2
        y = np.exp(beta * logits) / np.exp(beta * logits).sum(-1, keepdims=True)
        if quantized:
            ty = g.input(f"y{beta}", shape, np.int8, quant=Quant.of(1 / 256, -128))
            values[ty] = np.clip(np.round(y * 256) - 128, -128, 127).astype(np.int8)
        else:
            ty = g.input(f"y{beta}", shape)
            values[ty] = y.astype(np.float32)
        values[tdy] = rng.normal(size=shape).astype(np.float32)
        g.op(ops.SOFTMAX_GRAD, [tdy, ty, tmode], [g.output(f"dx{beta}", shape)], ops.softmax_grad_options(beta))
    return record(f"softmax_grad_{'int8' if quantized else 'float'}", g.build(), _modes(g, lambda m: {
        p: (_mode(m) if t == tmode else values[t]) for p, t in enumerate(g.inputs)}))


def pool_grad_case(quantized: bool) -> Case:
    """Max and average pooling gradients next to the stock pooling ops."""
    rng = np.random.default_rng(5 + quantized)
    x_shape = (1, 7, 6, 3)
    dtype = np.int8 if quantized else np.float32
    quant = Quant.of(0.05, -4) if quantized else None
    g, values = _Graph(), {}
    tmode = g.input("mode", [1], np.int32)
    tx = g.input("x", x_shape, dtype, quant=quant)
    values[tx] = (rng.permutation(np.arange(-126, 126))[:126].astype(np.int8).reshape(x_shape) if quantized
                  else (rng.permutation(126).astype(np.float32) / 10).reshape(x_shape))
    for kind, kernel, stride, padding, pads in (("max", (2, 2), (2, 2), schema.Padding.VALID, (0, 0)),
                                                ("average", (3, 3), (2, 1), schema.Padding.SAME, (1, 1)),
                                                ("max", (3, 2), (1, 1), schema.Padding.SAME, (1, 0))):
        out_h = (7 - kernel[0]) // stride[0] + 1 if padding == schema.Padding.VALID else -(-7 // stride[0])
        out_w = (6 - kernel[1]) // stride[1] + 1 if padding == schema.Padding.VALID else -(-6 // stride[1])
        y_shape = (1, out_h, out_w, 3)
        ty = g.output(f"y{len(g.outputs)}", y_shape, dtype, quant=quant)
        options = schema.Pool2DOptionsT()
        options.padding, (options.filterHeight, options.filterWidth) = padding, kernel
        options.strideH, options.strideW = stride
        g.model.append_op("MAX_POOL_2D" if kind == "max" else "AVERAGE_POOL_2D", [tx], [ty],
                          builtin_options=options, builtin_options_type=schema.BuiltinOptions.Pool2DOptions)
        tdy = g.input(f"dy{len(g.outputs)}", y_shape)
        values[tdy] = rng.normal(size=y_shape).astype(np.float32)
        blob = ops.pool_grad_options(kind, x_shape, y_shape, kernel, stride, pads)
        g.op(ops.POOL_GRAD, [tdy, tx, ty, tmode] if kind == "max" else [tdy, -1, -1, tmode],
             [g.output(f"dx{len(g.outputs)}", x_shape)], blob)
    return record(f"pool_grad_{'int8' if quantized else 'float'}", g.build(), _modes(g, lambda m: {
        p: (_mode(m) if t == tmode else values[t]) for p, t in enumerate(g.inputs)}))


def shape_grads_case() -> Case:
    """MEAN, PAD (crop), broadcasting ADD/SUB/MUL and fan-in gradients."""
    rng = np.random.default_rng(7)
    g, values = _Graph(), {}
    tmode = g.input("mode", [1], np.int32)

    def feed(name, shape):
        t = g.input(name, shape)
        values[t] = rng.normal(size=shape).astype(np.float32)
        return t

    dy = feed("mean_dy", (2, 1, 1, 3))
    g.op(ops.MEAN_GRAD, [dy, tmode], [g.output("mean_dx", (2, 4, 5, 3))], ops.mean_grad_options((2, 4, 5, 3), [1, 2]))
    dy = feed("mean2_dy", (4,))
    g.op(ops.MEAN_GRAD, [dy, tmode], [g.output("mean2_dx", (4, 6))], ops.mean_grad_options((4, 6), [1]))
    dy = feed("crop_dy", (1, 6, 7, 2))
    g.op(ops.CROP, [dy, tmode], [g.output("crop_dx", (1, 4, 4, 2))], ops.crop_options((1, 6, 7, 2), [0, 1, 2, 0], (1, 4, 4, 2)))
    for kind in ("add", "subtract", "multiply"):
        dy = feed(f"{kind}_dy", (3, 4))
        other = feed(f"{kind}_b", (1, 4)) if kind == "multiply" else -1
        g.op(ops.BROADCAST_GRAD, [dy, other, tmode], [g.output(f"{kind}_da", (3, 4))],
             ops.broadcast_grad_options(kind, [3, 4], [3, 4], [1, 4]))
        a = feed(f"{kind}_a", (3, 4)) if kind == "multiply" else -1
        g.op(ops.BROADCAST_GRAD, [dy, a, tmode], [g.output(f"{kind}_db", (1, 4))],
             ops.broadcast_grad_options(kind, [3, 4], [1, 4], [3, 4]))
    parts = [feed(f"part{i}", (2, 5)) for i in range(3)]
    g.op(ops.ADD_GRADS, [tmode] + parts, [g.output("sum", (2, 5))], ops.version_only_options())
    return record("shape_grads_float", g.build(), _modes(g, lambda m: {
        p: (_mode(m) if t == tmode else values[t]) for p, t in enumerate(g.inputs)}))


def _state(params: np.ndarray, slots: int = 0) -> np.ndarray:
    params = np.asarray(params, np.float32).reshape(-1)
    header = Header(base_model_hash=1, layout_hash=2, payload_bytes=4 * params.size * (2 + slots),
                    param_count=params.size)
    return np.frombuffer(header.pack() + params.tobytes() + bytes(4 * params.size * (1 + slots)), np.uint8).copy()


def depthwise_case() -> Case:
    """Float depthwise conv with LoRA, and a conv whose weights train:
    forward and backward through the state, as a converted CNN runs them."""
    rng = np.random.default_rng(11)
    g, values = _Graph(), {}
    tmode = g.input("mode", [1], np.int32)
    dw = ops.LinearLayer(kind=ops.LinearKind.DEPTHWISE_CONV_2D, in_channels=4, out_channels=8, activation=1,
                         kernel=(3, 3), stride=(2, 1), padding=(1, 1), depth_multiplier=2, out_size=(4, 6))
    conv = ops.LinearLayer(kind=ops.LinearKind.CONV_2D, in_channels=3, out_channels=4, activation=3,
                           kernel=(3, 3), stride=(1, 1), dilation=(2, 2), padding=(2, 2), out_size=(5, 5))
    rank = 2
    a = (rng.normal(size=dw.lora_a_shape(rank)) * 0.4).astype(np.float32)
    b = (rng.normal(size=(8, rank)) * 0.4).astype(np.float32)
    conv_w = (rng.normal(size=conv.weight_shape()) * 0.3).astype(np.float32)
    conv_b = (rng.normal(size=4) * 0.1).astype(np.float32)
    params = np.concatenate([a.ravel(), b.ravel(), conv_w.ravel(), conv_b.ravel()])
    dw = dataclasses.replace(dw, lora_rank=rank, lora_a_offset=0, lora_b_offset=a.size, lora_scale=0.8)
    conv = dataclasses.replace(conv, weight_offset=a.size + b.size, bias_offset=a.size + b.size + conv_w.size)
    tstate = g.input("state", [params.size * 8 + HEADER_BYTES], np.uint8, is_variable=True)
    values[tstate] = _state(params)
    for layer, x_shape, prefix in ((dw, (1, 8, 6, 4), "dw"), (conv, (1, 5, 5, 3), "conv")):
        tx = g.input(f"{prefix}_x", x_shape)
        values[tx] = rng.normal(size=x_shape).astype(np.float32)
        y_shape = (1, *layer.out_size, layer.out_channels)
        tw = -1 if layer.weight_offset >= 0 else g.const(f"{prefix}_w", (rng.normal(size=layer.weight_shape()) * 0.4).astype(np.float32))
        tb = -1 if layer.bias_offset >= 0 else g.const(f"{prefix}_b", (rng.normal(size=layer.out_channels) * 0.1).astype(np.float32))
        ty = g.output(f"{prefix}_y", y_shape)
        g.op(layer.forward_op, [tx, tw, tb, tstate], [ty], layer.options())
        tdy = g.input(f"{prefix}_dy", y_shape)
        values[tdy] = rng.normal(size=y_shape).astype(np.float32)
        g.op(layer.grad_op, [tdy, tx, ty, tw, tstate, tmode, -1], [g.output(f"{prefix}_dx", x_shape)], layer.options())
    g.outputs.append(tstate)
    invocations = _modes(g, lambda m: {p: (_mode(m) if t == tmode else values[t]) for p, t in enumerate(g.inputs)
                                       if t != tstate})
    invocations[0].feeds[g.inputs.index(tstate)] = values[tstate]  # a state load
    return record("conv_depthwise_float", g.build(), invocations)


def all_cases() -> list[Case]:
    adam = OptimizerConfig(kind="adam")
    momentum = OptimizerConfig(kind="momentum", accumulate=2, clip_norm=1.0)
    return [
        converted_case("digits_int8_lora_adam", "digits", "int8", optimizer=adam),
        converted_case("digits_float_lora_momentum", "digits", "float", optimizer=momentum),
        converted_case("digits_int8_adapter_sgd", "digits", "int8", method="adapter"),
        converted_case("digits_int8_bias_adam", "digits", "int8", method="bias", targets="last:3", optimizer=adam),
        converted_case("digits_float_lora_mse", "digits", "float", loss="mse"),
        converted_case("digits_int8_lora_integer", "digits", "int8", targets="last:3", arithmetic="int8"),
        converted_case("basic_motions_int8_bias_integer", "basic_motions", "int8", lr=0.03, method="bias",
                       targets="last:3", arithmetic="int8"),
        distill_case(),
        converted_case("basic_motions_int8_lora_adam", "basic_motions", "int8", lr=0.01, targets="last:3",
                       optimizer=adam),
        converted_case("basic_motions_float_bias_sgd", "basic_motions", "float", lr=0.01, method="bias",
                       targets="last:3"),
        activation_grad_case(False),
        activation_grad_case(True),
        softmax_grad_case(False),
        softmax_grad_case(True),
        pool_grad_case(False),
        pool_grad_case(True),
        shape_grads_case(),
        depthwise_case(),
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: make_kernel_cases.py OUT.bin", file=sys.stderr)
        return 2
    cases = all_cases()
    write_cases(cases, Path(argv[1]))
    covered = set().union(*(c.kernels for c in cases))
    print(f"wrote {argv[1]}: {len(cases)} cases, kernels {len(covered)}/{len(plugin.op_names())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
