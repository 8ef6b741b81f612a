"""`convert --arithmetic int8`: integer training for FPU-less microcontrollers.

LoRA (--method lora), a bias delta (--method bias) or the last layer's
weights and bias (--method head: int16 deltas over the frozen int8 layer) on
int8 FULLY_CONNECTED layers, trained with integers only. Every scale
is fixed here, at conversion, and reaches the kernels as a fixed-point
multiplier (QMult: real = multiplier * 2^(shift - 31)); the kernels
(tflm_ops/kernels/lora_int.cc, loss_int.cc, sgd_int.cc; math in
tflm_ops/reference/lora_int.h) never see a float scale.

  parameters    LoRA A and B as int16 with a fixed per-tensor scale each
                (A: peft's kaiming bound / 2^13, so A may grow 4x; B: a range
                from the layer's weights, see b_scale); a trainable bias is an
                int16 delta on the frozen int32 bias, in 1/256 output steps
  forward       the int8 layer exactly as the stock kernel, plus the LoRA
                term B (A (x - zx)) added in output units (B = 0: the same bytes)
  loss          softmax cross-entropy in integers: an exp table of the logits'
                scale, int16 gradient (softmax - onehot) with exponent -15
  backward      int16 activation gradients with a per-tensor power-of-two
                exponent chosen per sample; int32/int64 accumulation
  gradients     int32 accumulators in the state, in units of s_p * 2^-8
                (quantization-aware scaling: the gradient of the integer
                parameter times s_p^-2, so integer SGD moves the real value
                as float SGD would)
  update        quantized SGD with stochastic rounding (seeded integer hash),
                optionally with momentum (an int32 velocity per parameter in
                2^-16 steps, the momentum in Q16)

The model's interface does not change: learning_rate and loss stay float32
tensors, read and written as IEEE bits by integer code.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
from tflm_train.converter import integer_conv, ops
from tflm_train.converter.constants import (
    INT_WEIGHT_DELTA_VERSION,
    SGD_INT_MOMENTUM_VERSION,
)
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.integer_quant import (
    INT8_ACTIVATIONS,
    activation_range,
    i32s,
    quantize_multiplier,
    round_away,
)
from tflm_train.converter.layers import dequantize, linear_target
from tflm_train.converter.losses import loss_input
from tflm_train.converter.matching import match_targets
from tflm_train.converter.model_ir import Model, model_hash
from tflm_train.converter.rewrite import kaiming_uniform
from tflm_train.converter.state_format import StateLayout

ARITHMETICS = ("float", "int8")
ROUNDINGS = {"nearest": 0, "stochastic": 1}
A_STEPS = 8192  # int16 steps per kaiming bound of A
GRAD_FRACTION_BITS = 8  # accumulator unit: s_p * 2^-8 (reference/lora_int.h kGradFractionBits)
LOSS_GRAD_EXPONENT = -15
_ACTIVATIONS = INT8_ACTIVATIONS



def exp_table(logit_scale: float) -> np.ndarray:
    """2^16 exp(-d * s) for d = 0..255 (int32), the integer softmax's table."""
    d = np.arange(256, dtype=np.float64)
    return np.floor(65536.0 * np.exp(-d * float(logit_scale)) + 0.5).astype(np.int32)


METHODS = ("lora", "bias", "head")
# --method head: the weight delta's int16 range covers this many times the
# layer's largest weight (a trained head may move far from its start).
HEAD_WEIGHT_REACH = 4.0
BIAS_STEPS_PER_OUTPUT_STEP = 256  # a bias delta's int16 step: 1/256 of the output's


def _check_options(config) -> None:
    if config.method not in METHODS:
        raise ConversionError(
            f"--arithmetic int8 supports --method lora, bias or head (on int8 FULLY_CONNECTED layers), not {config.method}"
        )
    if config.method == "head" and (config.head_mode != "replace" or config.classes is not None):
        raise ConversionError(
            "--arithmetic int8 --method head trains the model's last layer in place: "
            "--head-mode append and --classes are float-only"
        )
    opt = config.optimizer
    if opt.kind not in ("sgd", "momentum") or opt.accumulate != 1 or opt.clip_norm != 0:
        raise ConversionError(
            "--arithmetic int8 trains with integer SGD: use --optimizer sgd or momentum without --accumulate / --clip"
        )
    if opt.kind == "momentum" and not 0.0 <= opt.momentum < 1.0:
        raise ConversionError("--arithmetic int8 takes a --momentum in [0, 1)")
    if config.loss not in (None, "ce"):
        raise ConversionError("--arithmetic int8 supports the cross-entropy loss (--loss ce) only")
    if config.r > 32:
        raise ConversionError("--arithmetic int8 supports a LoRA rank up to 32")


def _quant(model: Model, tensor: int, what: str, index: int):
    q = model.quant(tensor)
    if q is None:
        raise ConversionError(f"operator {index}: its {what} has no quantization; --arithmetic int8 needs an int8 model")
    return q


def _chain(model: Model, prediction: int, targets: list[int]) -> list[int]:
    """The FULLY_CONNECTED operators from the deepest target to the loss,
    each feeding the next and nothing else; refuses anything else."""
    producers, consumers = model.producers(), model.consumers()
    chain: list[int] = []
    tensor = prediction
    remaining = set(targets)
    while remaining:
        index = producers.get(tensor)
        if index is None:
            raise ConversionError("an adapted layer does not feed the loss")
        kind = model.op_type(model.operators[index])
        if kind != "FULLY_CONNECTED" and not integer_conv.crossable(kind):
            raise ConversionError(
                f"operator {index} ({kind}) lies between the adapted layers and the loss: "
                "--arithmetic int8 backpropagates through FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, pools, MEAN and RESHAPE only"
            )
        if tensor != prediction and len(consumers.get(tensor, [])) > 1:
            raise ConversionError(f"operator {index}'s output feeds several operators: not supported by --arithmetic int8")
        chain.append(index)
        remaining.discard(index)
        tensor = model.inputs_of(model.operators[index])[0]
    return chain[::-1]


class _Layer:
    """One int8 FULLY_CONNECTED of the chain and its fixed-point constants."""

    def __init__(self, model: Model, index: int):
        t = linear_target(model, index)
        self.target = t
        for tensor, what in ((t.x, "input"), (t.weights, "weights"), (t.y, "output")):
            if model.dtype(tensor) != np.int8:
                raise ConversionError(f"operator {index}: {what} is {model.dtype(tensor)}; --arithmetic int8 needs int8 layers")
        if t.bias >= 0 and model.dtype(t.bias) != np.int32:
            raise ConversionError(f"operator {index}: bias is {model.dtype(t.bias)}, expected int32")
        if t.activation not in _ACTIVATIONS:
            raise ConversionError(f"operator {index}: fused activation {t.activation} is not supported by --arithmetic int8")
        qx, qw, qy = (_quant(model, tensor, what, index) for tensor, what in ((t.x, "input"), (t.weights, "weights"), (t.y, "output")))
        self.sx, self.zx = float(qx.scale[0]), int(qx.zero_point[0])
        self.sy, self.zy = float(qy.scale[0]), int(qy.zero_point[0])
        units, fan_in = t.units, t.in_features
        self.sw = np.broadcast_to(qw.scale.astype(np.float32), (units,)).astype(np.float64)
        self.rows, self.fan_in, self.units = t.batches, fan_in, units
        self.w_real = dequantize(model.constant(t.weights), qw, 0)
        # The stock kernel's requantization per channel (kernels/linear_forward.cc).
        requant = [quantize_multiplier(self.sx * float(np.float32(s)) / self.sy) for s in self.sw]
        self.requant = np.asarray(requant, np.int32).reshape(-1)
        self.act_min, self.act_max = activation_range(self.target.activation, self.zy, self.sy)
        sw_max = float(self.sw.max())
        self.ratios = np.floor(self.sw / sw_max * 16384 + 0.5).astype(np.int32)
        self.sw_max = sw_max
        self.dx_base = math.floor(math.log2(sw_max)) - 8  # 8 bits below a weight step

    def pass_range(self) -> tuple[int, int]:
        """The gradient passes where pass_min < y < pass_max."""
        act = self.target.activation
        if act == ops.Activation.RELU:
            return self.act_min, 128
        return self.act_min, self.act_max

    def b_scale(self, rank: int, lora_scale: float) -> float:
        """B's int16 step: B A can reach about the layer's own weights
        (|A| ~ 1/sqrt(in)), with 4x room: 4 max|W| sqrt(in) / (scale sqrt(r))."""
        reach = 4.0 * float(np.abs(self.w_real).max() or 1.0) * math.sqrt(self.fan_in) / (lora_scale * math.sqrt(rank))
        return reach / 32767.0


class _Trainable:
    """What one target layer trains: LoRA (rank > 0) or a bias delta."""

    rank = 0
    a = b = bias = weights = None  # state entries (weights: --method head's weight delta)
    hidden = -1
    s_a = s_b = s_bias = s_weights = 0.0

    @property
    def a_offset(self) -> int:
        return self.a.offset if self.a else 0

    @property
    def b_offset(self) -> int:
        return self.b.offset if self.b else 0

    @property
    def bias_offset(self) -> int:
        return self.bias.offset if self.bias else -1

    @property
    def weights_offset(self) -> int:
        return self.weights.offset if self.weights else -1

    @property
    def first_offset(self) -> int:
        return self.a_offset if self.rank else self.bias_offset

    @property
    def size(self) -> int:
        return sum(e.size for e in (self.a, self.b, self.bias, self.weights) if e is not None)



def _qmult(real: float) -> tuple[int, int]:
    return quantize_multiplier(real)


def _versioned(op: str, tr: _Trainable) -> bytes:
    """The options' version byte: 2 when the layer trains a weight delta
    (its fields are appended), else the op's version 1."""
    return bytes([INT_WEIGHT_DELTA_VERSION if tr.weights else ops.OPTIONS_VERSIONS[op]])


MOMENTUM_BITS = 16  # reference/lora_int.h kMomentumBits


def momentum_q16(momentum: float) -> int:
    """The integer optimizer's momentum: round(m * 2^16), below 2^16."""
    return min(round_away(momentum * 2**MOMENTUM_BITS), 2**MOMENTUM_BITS - 1)


def _sgd_options(config) -> bytes:
    """TFLMT_SGD_INT: rounding and seed; with momentum (version 2) its Q16 value."""
    fields = i32s(ROUNDINGS[config.rounding], config.seed)
    if config.optimizer.kind == "momentum":
        return bytes([SGD_INT_MOMENTUM_VERSION]) + fields + i32s(momentum_q16(config.optimizer.momentum))
    return bytes([ops.OPTIONS_VERSIONS[ops.SGD_INT]]) + fields


def convert(model_bytes: bytes, config):
    """The integer twin of converter/convert.py's convert (same interface)."""
    from tflm_train.converter.convert import (
        METADATA_FORMAT,
        METADATA_NAME,
        ConvertResult,
    )

    _check_options(config)
    model = Model.from_bytes(model_bytes)
    if model.metadata(METADATA_NAME) is not None:
        raise ConversionError("this model was already converted by tflm-train")
    main = model.main
    if main.outputs is None or main.inputs is None or len(main.outputs) == 0 or len(main.inputs) == 0:
        raise ConversionError("the model's main subgraph has no inputs or outputs")
    original_inputs = [int(t) for t in main.inputs]
    original_outputs = [int(t) for t in main.outputs]
    eligible_kinds, kind_label = integer_conv.eligible(config.method)
    eligible = [i for i, op in enumerate(model.operators) if model.op_type(op) in eligible_kinds]
    default_targets = "last:1" if config.method == "head" else "last:2"
    targets = match_targets(model, config.targets or default_targets, eligible, kind_label)
    output = original_outputs[0]
    prediction, loss_note = loss_input(model, output, "ce")
    if model.dtype(prediction) != np.int8:
        raise ConversionError("--arithmetic int8 needs int8 logits before the loss")
    chain = _chain(model, prediction, targets)
    if config.method == "head" and (len(targets) != 1 or chain != list(targets)):
        raise ConversionError("--arithmetic int8 --method head trains one layer, the FULLY_CONNECTED before the loss")
    kinds = {index: model.op_type(model.operators[index]) for index in chain}
    layers = {index: _Layer(model, index) for index in chain if kinds[index] == "FULLY_CONNECTED"}
    conv_steps = {index: integer_conv.chain_step(model, index) for index in chain if index not in layers}
    logits_quant = model.quant(prediction)
    classes = int(model.shape(prediction)[-1])
    rows = int(np.prod(model.shape(prediction))) // classes

    rng = np.random.default_rng(config.seed)
    r, lora_scale = config.r, config.lora_scale
    layout = StateLayout(
        optimizer=config.optimizer.kind,  # momentum: an int32 velocity per parameter
        semantics={"method": config.method, "lora_scale": lora_scale, "head_mode": config.head_mode,
                   "arithmetic": "int8"},
        integer=True,
    )
    state = model.add_tensor("tflm_train/state", [1], np.uint8, is_variable=True)
    operators = main.operators
    notes, adapted = [], []
    trains = {}  # chain index -> _Trainable
    use_lora = config.method == "lora"
    for index in sorted(targets):
        if index in conv_steps:  # a conv layer's bias (converter/integer_conv.py)
            adapted.append(integer_conv.add_forward(model, conv_steps[index], layout, state))
            continue
        layer, t = layers[index], layers[index].target
        tr = _Trainable()
        outputs = [t.y]
        if use_lora:
            a_real = kaiming_uniform(rng, (r, t.in_features))
            tr.s_a = (1.0 / math.sqrt(t.in_features)) / A_STEPS
            tr.s_b = layer.b_scale(r, lora_scale)
            tr.a = layout.add_int16(f"{t.short}/lora_A", "lora_A", t.short, np.round(a_real / tr.s_a), tr.s_a)
            tr.b = layout.add_int16(f"{t.short}/lora_B", "lora_B", t.short, np.zeros((t.units, r)), tr.s_b)
            tr.rank = r
            tr.hidden = model.add_tensor(f"{t.name}/lora_hidden_int", [layer.rows, r], np.int32)
            outputs.append(tr.hidden)
        else:
            tr.s_bias = layer.sy / BIAS_STEPS_PER_OUTPUT_STEP
            tr.bias = layout.add_int16(f"{t.short}/bias_delta", "bias_delta", t.short, np.zeros(t.units), tr.s_bias)
        if config.method == "head":
            # The layer's weights train as W + delta: int16, one scale for the tensor.
            tr.s_weights = HEAD_WEIGHT_REACH * float(np.abs(layer.w_real).max() or 1.0) / 32767.0
            tr.weights = layout.add_int16(f"{t.short}/weight_delta", "weight_delta", t.short,
                                          np.zeros((t.units, t.in_features)), tr.s_weights)
        requant = model.add_tensor(f"{t.name}/requant", [t.units, 2], np.int32, data=layer.requant.reshape(t.units, 2))
        delta = _qmult(lora_scale * tr.s_b * tr.s_a * layer.sx / layer.sy) if use_lora else (0, 0)
        bias_out = _qmult(tr.s_bias / layer.sy) if tr.bias else (0, 0)
        options = _versioned(ops.FULLY_CONNECTED_INT, tr) + i32s(
            layer.rows, t.in_features, t.units, tr.rank, tr.a_offset, tr.b_offset, tr.bias_offset,
            layer.zx, layer.zy, layer.act_min, layer.act_max, *delta, *bias_out,
        )
        if tr.weights:
            options += i32s(tr.weights_offset, *_qmult(tr.s_weights * layer.sx / layer.sy))
        new_op = model.make_op(ops.FULLY_CONNECTED_INT, [t.x, t.weights, t.bias, state, requant], outputs,
                               custom_options=options)
        operators[operators.index(t.op)] = new_op
        trains[index] = tr
        adapted.append({"index": index, "name": t.short, "op": "FULLY_CONNECTED", "params": tr.size,
                        "activation": int(t.activation), "first_offset": tr.first_offset})  # for merge
    forward = list(model.operators)
    chosen = ", ".join((layers.get(i) or conv_steps[i]).target.short for i in sorted(targets))
    what = {"lora": f"LoRA rank {r}, scale {lora_scale:g}", "bias": "bias-only (an int16 delta on the frozen bias)",
            "head": "head: the layer's weights and bias (int16 deltas on the frozen int8 layer)"}[config.method]
    momentum = f" and momentum {config.optimizer.momentum:g}" if config.optimizer.kind == "momentum" else ""
    notes.append(
        f"{what} on {chosen}, integer arithmetic (int16 parameters, int32 accumulators, "
        f"integer SGD{momentum} with {config.rounding} rounding)"
    )
    notes.append(loss_note)

    target = model.add_tensor("tflm_train/target", [rows], np.int32)
    learning_rate = model.add_tensor("tflm_train/learning_rate", [1], np.float32)
    mode = model.add_tensor("tflm_train/mode", [1], np.int32)
    loss_value = model.add_tensor("tflm_train/loss", [1], np.float32)
    table = model.add_tensor("tflm_train/exp_table", [256], np.int32, data=exp_table(float(logits_quant.scale[0])))
    dy = model.add_tensor(model.tensor_name(prediction) + "/grad_int", list(model.shape(prediction)), np.int16)
    dy_exp = model.add_tensor(model.tensor_name(prediction) + "/grad_exponent", [1], np.int32)
    model.append_op(ops.LOSS_INT, [prediction, target, mode, table], [loss_value, dy, dy_exp],
                    custom_options=bytes([ops.OPTIONS_VERSIONS[ops.LOSS_INT]]) + i32s(rows, classes))

    deepest = chain[0]
    for index in reversed(chain):
        if index in conv_steps:
            dy, dy_exp = integer_conv.add_backward(model, index, conv_steps[index], dy, dy_exp, state, mode,
                                                   needs_dx=index != deepest)
            continue
        layer, t = layers[index], layers[index].target
        ratios = model.add_tensor(f"{t.name}/weight_ratios", [t.units], np.int32, data=layer.ratios)
        tr = trains.get(index, _Trainable())
        grad_a, grad_b, grad_bias, dx_lora = (0, 0), (0, 0), (0, 0), (0, 0)
        x_in, state_in, hidden_in = -1, -1, -1
        unit = 2.0**-GRAD_FRACTION_BITS  # an accumulator counts this many parameter steps
        if tr.rank:
            grad_b = _qmult(lora_scale * tr.s_a * layer.sx / (tr.s_b * unit))
            grad_a = _qmult(lora_scale * tr.s_b * layer.sx / (tr.s_a * unit))
            dx_lora = _qmult(lora_scale * tr.s_a * tr.s_b / 2.0**layer.dx_base)
            x_in, state_in, hidden_in = t.x, state, tr.hidden
        if tr.bias:
            grad_bias = _qmult(1.0 / (tr.s_bias * unit))
            state_in = state
        if tr.weights:
            x_in, state_in = t.x, state
        dx_weights = _qmult(layer.sw_max / 2.0**layer.dx_base)
        pass_min, pass_max = layer.pass_range()
        outputs = []
        if index != deepest:
            dx = model.add_tensor(model.tensor_name(t.x) + "/grad_int", list(model.shape(t.x)), np.int16)
            dx_exp = model.add_tensor(model.tensor_name(t.x) + "/grad_exponent", [1], np.int32)
            outputs = [dx, dx_exp]
        options = _versioned(ops.FULLY_CONNECTED_INT_GRAD, tr) + i32s(
            layer.rows, t.in_features, t.units, tr.rank, tr.a_offset, tr.b_offset, tr.bias_offset,
            layer.zx, pass_min, pass_max, *grad_bias, *grad_a, *grad_b, *dx_weights, *dx_lora, layer.dx_base,
        )
        if tr.weights:  # dL/dW = dy (x - zx): real units s_x, into s_weights * 2^-8
            options += i32s(tr.weights_offset, *_qmult(layer.sx / (tr.s_weights * unit)))
        y_in = t.y if t.activation != ops.Activation.NONE else -1
        model.append_op(ops.FULLY_CONNECTED_INT_GRAD,
                        [dy, dy_exp, y_in, x_in, t.weights, state_in, mode, hidden_in, ratios], outputs,
                        custom_options=options)
        if outputs:
            dy, dy_exp = outputs
    model.append_op(ops.SGD_INT, [state, mode, learning_rate], [], custom_options=_sgd_options(config))

    base_hash = model_hash(model_bytes)
    initial = layout.initial_blob(base_hash)
    initial_tensor = model.add_tensor(
        "tflm_train/initial_state", [len(initial)], np.uint8, data=np.frombuffer(initial, np.uint8)
    )
    model.tensors[state].shape = np.asarray([layout.state_bytes], dtype=np.int32)
    float_inputs = [t for t in original_inputs if model.dtype(t) == np.float32]
    state_op = model.make_op(
        ops.STATE, [state, initial_tensor, mode] + float_inputs, [], custom_options=ops.version_only_options(ops.STATE)
    )
    main.operators.insert(0, state_op)
    main.inputs = original_inputs + [target, learning_rate, mode, state]
    main.outputs = original_outputs + [loss_value, state]
    n_in, n_out = len(original_inputs), len(original_outputs)
    metadata = {
        "format": METADATA_FORMAT,
        "base_model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "base_model_hash": base_hash,
        "config": config.to_json(),
        "loss": "ce",
        "classes": classes,
        "output_kind": "logits" if prediction == output else "probabilities",
        "inputs": {"x": list(range(n_in)), "target": n_in, "learning_rate": n_in + 1, "mode": n_in + 2, "state": n_in + 3},
        "outputs": {"y": list(range(n_out)), "loss": n_out, "state": n_out + 1},
        "forward_ops": [1, 1 + len(forward)],
        "state": layout.to_json(),
        "adapted": adapted,
        "notes": notes,
        "arithmetic": "int8",
    }
    model.set_metadata(METADATA_NAME, json.dumps(metadata).encode())
    return ConvertResult(model.sealed_bytes(), metadata)  # with its CRC (integrity.py)
