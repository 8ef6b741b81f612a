"""`tflm-train merge`: folds a trained state into a plain inference .tflite.

LoRA becomes W + (alpha / r) B A, trained biases replace the frozen ones and
a trained head becomes an ordinary layer; training operators, inputs and
outputs are removed. Int8 layers are requantized per output channel (scale
max|W'| / 127, zero point 0; int32 bias at input scale x weight scale), so
the merged model runs on any TFLM or TFLite runtime with builtin ops only.
A float head trained on an int8 model goes back to int8 the same way, with
its own weight scale, and the original's output ops and types
(requantized_head): a wake-word head merges into a model with the shipped
uint8 interface.
Whether a method folds, and how, is in its MethodSpec (merges, merge_note):
bottleneck adapters are nonlinear and cannot be folded, so such a model is
deployed as converted, in inference mode.
"""

from __future__ import annotations

import json

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter import methods, ops
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.convert import METADATA_NAME
from tflm_train.converter.integrity import refuse_damaged
from tflm_train.converter.layers import dequantize, same_padding
from tflm_train.converter.model_ir import Model, ModelError, Quant
from tflm_train.converter.state_format import FLAG_INTEGER, dequantized_parameters, parameters, validate
from tflm_train.converter.training_info import training_info

MERGED_METADATA_NAME = "tflm_train_merged"


def _requantize_per_channel(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights and per-channel scales along `axis`, symmetric (zero point 0)."""
    moved = np.moveaxis(weights, axis, 0)
    peak = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * weights.ndim
    shape[axis] = -1
    q = np.clip(np.round(weights / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def _builtin_options(model: Model, layer: ops.LinearLayer, x: int):
    """Stock options reproducing the layer's geometry: (op type, options, type)."""
    if layer.kind == ops.LinearKind.FULLY_CONNECTED:
        options = schema.FullyConnectedOptionsT()
        options.fusedActivationFunction = layer.activation
        return "FULLY_CONNECTED", options, schema.BuiltinOptions.FullyConnectedOptions
    x_shape = model.shape(x)
    padding = None
    for candidate in (schema.Padding.SAME, schema.Padding.VALID):
        rows = same_padding(x_shape[1], layer.kernel[0], layer.stride[0], layer.dilation[0], candidate)
        cols = same_padding(x_shape[2], layer.kernel[1], layer.stride[1], layer.dilation[1], candidate)
        if (rows[0], cols[0]) == tuple(layer.out_size) and (rows[1], cols[1]) == tuple(layer.padding):
            padding = candidate
            break
    if padding is None:
        raise ConversionError("merge: the layer's padding is neither SAME nor VALID")
    if layer.kind == ops.LinearKind.CONV_2D:
        options, kind, options_type = schema.Conv2DOptionsT(), "CONV_2D", schema.BuiltinOptions.Conv2DOptions
    else:
        options, kind = schema.DepthwiseConv2DOptionsT(), "DEPTHWISE_CONV_2D"
        options_type = schema.BuiltinOptions.DepthwiseConv2DOptions
        options.depthMultiplier = layer.depth_multiplier
    options.padding = padding
    options.strideH, options.strideW = layer.stride
    options.dilationHFactor, options.dilationWFactor = layer.dilation
    options.fusedActivationFunction = layer.activation
    return kind, options, options_type


class _Folder:
    def __init__(self, model: Model, params: np.ndarray):
        self.model = model
        self.params = params

    def _slice(self, offset: int, shape) -> np.ndarray:
        size = int(np.prod(shape))
        return self.params[offset : offset + size].reshape(shape)

    def _weights(self, layer: ops.LinearLayer, weights: int) -> tuple[np.ndarray, bool]:
        """The layer's real filter with LoRA folded in, and whether it was int8."""
        shape = layer.weight_shape()
        channel_axis = 3 if layer.kind == ops.LinearKind.DEPTHWISE_CONV_2D else 0
        if layer.weight_offset >= 0:
            real, frozen_int8 = self._slice(layer.weight_offset, shape).astype(np.float64), False
        else:
            values = self.model.constant(weights)
            real = dequantize(values, self.model.quant(weights), axis=channel_axis).astype(np.float64)
            frozen_int8 = values.dtype == np.int8
        if layer.lora_rank > 0:
            r = layer.lora_rank
            a = self._slice(layer.lora_a_offset, (r, int(np.prod(layer.lora_a_shape(r)[1:])))).astype(np.float64)
            b = self._slice(layer.lora_b_offset, (layer.out_channels, r)).astype(np.float64)
            delta = layer.lora_scale * (b @ a)  # [out, taps * in] or, depthwise, [out, taps]
            if layer.kind == ops.LinearKind.DEPTHWISE_CONV_2D:
                delta = delta.T.reshape(shape)
            real = real + delta.reshape(shape)
        return real, frozen_int8

    def fold(self, op, layer: ops.LinearLayer | None = None) -> list:
        """Stock operators that compute what our trainable linear `op` does
        (`layer`: its description when its options are not a LinearLayer's)."""
        model = self.model
        layer = layer or ops.LinearLayer.from_options(op.customOptions)
        x, weights, bias = model.inputs_of(op)[:3]
        y = model.outputs_of(op)[0]
        w_real, frozen_int8 = self._weights(layer, weights)
        out_c = layer.out_channels
        if layer.bias_offset >= 0:
            b_real = self._slice(layer.bias_offset, (out_c,)).astype(np.float64)
        elif bias >= 0:
            b_values = model.constant(bias)
            if b_values.dtype == np.int32:
                scale = float(model.quant(x).scale[0]) * model.quant(weights).scale.astype(np.float64)
                b_real = b_values.astype(np.float64) * scale
            else:
                b_real = b_values.astype(np.float64)
        else:
            b_real = None

        name = model.tensor_name(y)
        op_type, options, options_type = _builtin_options(model, layer, x)
        kwargs = {"builtin_options": options, "builtin_options_type": options_type}
        w_shape = list(layer.weight_shape())
        if frozen_int8 and model.dtype(x) == np.int8 and model.dtype(y) == np.int8:
            axis = 3 if layer.kind == ops.LinearKind.DEPTHWISE_CONV_2D else 0
            q, scales = _requantize_per_channel(w_real, axis)
            w_tensor = model.add_tensor(f"{name}/merged_weights", w_shape, np.int8, data=q, quant=Quant.of(scales, 0, axis))
            inputs = [x, w_tensor]
            if b_real is not None:
                bias_scale = float(model.quant(x).scale[0]) * scales.astype(np.float64)
                b_q = np.round(b_real / bias_scale).astype(np.int32)
                inputs.append(
                    model.add_tensor(f"{name}/merged_bias", [out_c], np.int32, data=b_q, quant=Quant.of(bias_scale, 0))
                )
            return [model.make_op(op_type, inputs, [y], **kwargs)]
        produced = []
        if model.dtype(x) != np.float32:
            # A float layer on an int8 body: dequantize its input first.
            x_float = model.add_tensor(f"{name}/input_float", model.shape(x), np.float32)
            produced.append(model.make_op("DEQUANTIZE", [x], [x_float]))
            x = x_float
        y_out = y
        if model.dtype(y) != np.float32:
            y_out = model.add_tensor(f"{name}/output_float", model.shape(y), np.float32)
        w_tensor = model.add_tensor(f"{name}/merged_weights", w_shape, np.float32, data=w_real.astype(np.float32))
        inputs = [x, w_tensor]
        if b_real is not None:
            inputs.append(model.add_tensor(f"{name}/merged_bias", [out_c], np.float32, data=b_real.astype(np.float32)))
        produced.append(model.make_op(op_type, inputs, [y_out], **kwargs))
        if y_out != y:  # back to the quantized tensor the next layers read
            produced.append(model.make_op("QUANTIZE", [y_out], [y]))
        return produced


# The requantized head's logits: int8, zero point 0, range [-8, 8]. A
# LOGISTIC's int8 output (steps of 1/256) is the same for every logit beyond
# +-8 (sigmoid(8) is 1/2981 from 1), so clamping there loses nothing, and the
# step (0.063) is finer than a shipped wake-word head's (0.18 for hey_jarvis).
HEAD_LOGITS_RANGE = 8.0


def requantized_head(model: Model, folder: _Folder, op, chain: list[dict]) -> tuple[list, int, int]:
    """A trained float head on an int8 body, back in int8: weights with
    their own per-channel scale (max |w| / 127, so training was not capped
    by the shipped scale and the merge is not either), an int32 bias, int8
    logits over [-8, 8], then the original's output ops (LOGISTIC, then
    QUANTIZE) with the original's output types and quantization.
    Returns (ops, the float logits tensor they replace, the new output)."""
    layer = ops.LinearLayer.from_options(op.customOptions)
    x = model.inputs_of(op)[0]
    logits_float = model.outputs_of(op)[0]
    name = model.tensor_name(logits_float)
    w_real, _ = folder._weights(layer, -1)
    b_real = folder._slice(layer.bias_offset, (layer.out_channels,)).astype(np.float64)
    q, scales = _requantize_per_channel(w_real, 0)
    x_scale = float(model.quant(x).scale[0])
    bias_scale = x_scale * scales.astype(np.float64)
    shape = model.shape(logits_float)
    w_tensor = model.add_tensor(f"{name}/merged_weights", list(layer.weight_shape()), np.int8, data=q,
                                quant=Quant.of(scales, 0, 0))
    b_tensor = model.add_tensor(f"{name}/merged_bias", [layer.out_channels], np.int32,
                                data=np.round(b_real / bias_scale).astype(np.int32), quant=Quant.of(bias_scale, 0))
    logits = model.add_tensor(f"{name}/int8", shape, np.int8, quant=Quant.of(HEAD_LOGITS_RANGE / 127.0, 0))
    op_type, options, options_type = _builtin_options(model, layer, x)
    produced = [model.make_op(op_type, [x, w_tensor, b_tensor], [logits], builtin_options=options,
                              builtin_options_type=options_type)]
    tensor = logits
    for step in chain:
        out = model.add_tensor(f"{name}/{step['op'].lower()}", shape, np.dtype(step["dtype"]),
                               quant=Quant.of(step["scale"], step["zero_point"]))
        produced.append(model.make_op(step["op"], [tensor], [out]))  # LOGISTIC, then QUANTIZE
        tensor = out
    return produced, logits_float, tensor


def initial_state(model: Model, info) -> bytes:
    """The full state a converted model starts from (what TFLMT_STATE builds)."""
    for t in range(len(model.tensors)):
        if model.tensor_name(t) == "tflm_train/initial_state":
            values = model.constant(t)
            if values is None:
                raise ModelError("converted model's initial state is not a constant: the model is corrupt")
            blob = values.tobytes()
            return blob + bytes(info.state_bytes - len(blob))
    raise ModelError("converted model has no initial state")


def _integer_layer(model: Model, op, metadata: dict, params: np.ndarray) -> ops.LinearLayer:
    """An integer layer (converter/integer.py) as the LinearLayer it folds
    like. Its trainable bias is a delta: the full bias (frozen + delta) is
    written into `params` at the delta's place."""
    rows_fan_units = np.frombuffer(bytes(op.customOptions)[1:29], "<i4")
    _rows, fan_in, units, rank, a_offset, b_offset, bias_offset = (int(v) for v in rows_fan_units)
    first = a_offset if rank else bias_offset
    activation = {entry["first_offset"]: entry["activation"] for entry in metadata["adapted"]}[first]
    if bias_offset >= 0:
        x, weights, bias = model.inputs_of(op)[:3]
        frozen = np.zeros(units)
        if bias >= 0:
            frozen = model.constant(bias).astype(np.float64) * (
                float(model.quant(x).scale[0]) * model.quant(weights).scale.astype(np.float64))
        params[bias_offset : bias_offset + units] += frozen
    config = metadata["config"]
    return ops.LinearLayer.fully_connected(
        fan_in, units, activation, lora_rank=rank, lora_a_offset=a_offset if rank else -1,
        lora_b_offset=b_offset if rank else -1, lora_scale=config["lora_alpha"] / config["r"],
        bias_offset=bias_offset,
    )


def merge(converted_bytes: bytes, state: bytes | None = None, drop_adapters: bool = False) -> bytes:
    """A plain .tflite computing what the converted model does with `state`.

    Without a state, the initial one: the base model as deployed (fresh LoRA
    and bias adapters fold to the original weights). With drop_adapters,
    bottleneck adapters are removed instead of refused: that too is the base
    model, for measuring it.
    """
    model = Model.from_bytes(converted_bytes)
    refuse_damaged(converted_bytes)  # the merged model gets a fresh checksum: never seal damage in
    info = training_info(model)
    if info is None:
        raise ModelError("model was not converted by tflm-train: there is nothing to merge")
    method = info.raw["config"]["method"]
    spec = methods.get(method)
    if not spec.merges and not drop_adapters:
        raise ConversionError(spec.merge_note)
    state = initial_state(model, info) if state is None else bytes(state)
    header = validate(state, info.expected_header(), info.state_bytes)
    if header.flags & FLAG_INTEGER:  # --arithmetic int8: int16 values times their scales
        folder = _Folder(model, dequantized_parameters(state, header, info.raw["state"]["tensors"]))
    else:
        folder = _Folder(model, parameters(state, header))
    first, end = info.raw["forward_ops"]
    merged_ops = []
    # Trained heads that go back to int8 (head's "int8_chain"): their float
    # logits, and everything computed only from them, are replaced.
    int8_heads = {entry["name"] + "/head/logits": entry["int8_chain"]
                  for entry in info.raw.get("adapted", []) if "int8_chain" in entry}
    replaced: set[int] = set()
    new_output: dict[str, int] = {}
    for op in model.operators[first:end]:
        kind = model.op_type(op)
        inputs = [t for t in model.inputs_of(op) if t >= 0]
        if inputs and replaced and all(t in replaced for t in inputs):
            replaced.update(model.outputs_of(op))  # the float activation after a requantized head
            continue
        if kind == ops.FULLY_CONNECTED and model.tensor_name(model.outputs_of(op)[0]) in int8_heads:
            chain = int8_heads[model.tensor_name(model.outputs_of(op)[0])]
            produced, logits_float, final = requantized_head(model, folder, op, chain)
            merged_ops.extend(produced)
            replaced.add(logits_float)
            new_output["tensor"] = final
        elif kind in (ops.FULLY_CONNECTED, ops.CONV_2D, ops.DEPTHWISE_CONV_2D):
            merged_ops.extend(folder.fold(op))
        elif kind == ops.FULLY_CONNECTED_INT:
            merged_ops.extend(folder.fold(op, _integer_layer(model, op, info.raw, folder.params)))
        elif kind == ops.ADAPTER and drop_adapters:
            # y' = y + U a + bu without the adapter: readers of y' read y.
            source, adapted = model.inputs_of(op)[0], model.outputs_of(op)[0]
            for other in model.operators[first:end]:
                if other.inputs is not None:
                    other.inputs = np.asarray([source if t == adapted else t for t in other.inputs], dtype=np.int32)
            model.main.outputs = np.asarray(
                [source if int(t) == adapted else int(t) for t in model.main.outputs], dtype=np.int32
            )
        elif kind.startswith("TFLMT_"):
            raise ConversionError(f"merge: cannot fold {kind}")
        else:
            merged_ops.append(op)
    main = model.main
    main.operators = merged_ops
    main.inputs = [int(main.inputs[i]) for i in info.raw["inputs"]["x"]]
    main.outputs = [int(main.outputs[i]) for i in info.raw["outputs"]["y"]]
    if replaced:  # the requantized head's output takes the float one's place
        main.outputs = [new_output["tensor"] if t in replaced else t for t in main.outputs]
    model.remove_metadata(METADATA_NAME)
    model.set_metadata(
        MERGED_METADATA_NAME,
        json.dumps(
            {"base_model_sha256": info.raw["base_model_sha256"], "method": method, "optimizer_steps": header.step}
        ).encode(),
    )
    model.prune()
    return model.sealed_bytes()  # a fresh CRC: the converted model's no longer applies
