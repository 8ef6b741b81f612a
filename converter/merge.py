"""`tflm-train merge`: folds a trained state into a plain inference .tflite.

LoRA becomes W + (alpha / r) B A, trained biases replace the frozen ones and
a trained head becomes an ordinary layer; training operators, inputs and
outputs are removed. Int8 layers are requantized per output channel (scale
max|W'| / 127, zero point 0; int32 bias at input scale x weight scale), so
the merged model runs on any TFLM or TFLite runtime with builtin ops only.
Bottleneck adapters are nonlinear and cannot be folded: such a model is
deployed as converted, in inference mode.
"""

from __future__ import annotations

import json

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter import ops
from tflm_train.converter.config import ConversionError
from tflm_train.converter.convert import METADATA_NAME
from tflm_train.converter.layers import dequantize
from tflm_train.converter.model_ir import Model, ModelError, Quant
from tflm_train.converter.state_format import parameters, validate
from tflm_train.converter.training_info import training_info

MERGED_METADATA_NAME = "tflm_train_merged"


def _requantize_per_channel(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights and per-row scales, symmetric (zero point 0)."""
    peak = np.abs(weights).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(weights / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


class _Folder:
    def __init__(self, model: Model, params: np.ndarray):
        self.model = model
        self.params = params

    def _slice(self, offset: int, shape) -> np.ndarray:
        size = int(np.prod(shape))
        return self.params[offset : offset + size].reshape(shape)

    def fold(self, op) -> list:
        """Stock operators that compute what the TFLMT_FULLY_CONNECTED `op` does."""
        model = self.model
        layer = ops.FullyConnectedLayer.from_options(op.customOptions)
        x, weights, bias = model.inputs_of(op)[:3]
        y = model.outputs_of(op)[0]
        units, in_features = layer.units, layer.in_features
        if layer.weight_offset >= 0:
            w_real = self._slice(layer.weight_offset, (units, in_features)).astype(np.float64)
            frozen_int8 = False
        else:
            w_values = model.constant(weights)
            w_real = dequantize(w_values, model.quant(weights), axis=0).astype(np.float64)
            frozen_int8 = w_values.dtype == np.int8
        if layer.lora_rank > 0:
            a = self._slice(layer.lora_a_offset, (layer.lora_rank, in_features)).astype(np.float64)
            b = self._slice(layer.lora_b_offset, (units, layer.lora_rank)).astype(np.float64)
            w_real = w_real + layer.lora_scale * (b @ a)
        if layer.bias_offset >= 0:
            b_real = self._slice(layer.bias_offset, (units,)).astype(np.float64)
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
        options = schema.FullyConnectedOptionsT()
        options.fusedActivationFunction = layer.activation
        kwargs = {"builtin_options": options, "builtin_options_type": schema.BuiltinOptions.FullyConnectedOptions}
        x_dtype = model.dtype(x)
        if frozen_int8 and x_dtype == np.int8:
            q, scales = _requantize_per_channel(w_real)
            w_tensor = model.add_tensor(f"{name}/merged_weights", [units, in_features], np.int8, data=q, quant=Quant.of(scales, 0))
            inputs = [x, w_tensor]
            if b_real is not None:
                bias_scale = float(model.quant(x).scale[0]) * scales.astype(np.float64)
                b_q = np.round(b_real / bias_scale).astype(np.int32)
                inputs.append(
                    model.add_tensor(f"{name}/merged_bias", [units], np.int32, data=b_q, quant=Quant.of(bias_scale, 0))
                )
            return [model.make_op("FULLY_CONNECTED", inputs, [y], **kwargs)]
        produced = []
        if x_dtype != np.float32:
            # A float head on an int8 body: dequantize its input first.
            x_float = model.add_tensor(f"{name}/input_float", model.shape(x), np.float32)
            produced.append(model.make_op("DEQUANTIZE", [x], [x_float]))
            x = x_float
        if model.dtype(y) != np.float32:
            raise ConversionError("merge: a float layer with a quantized output cannot be folded")
        w_tensor = model.add_tensor(f"{name}/merged_weights", [units, in_features], np.float32, data=w_real.astype(np.float32))
        inputs = [x, w_tensor]
        if b_real is not None:
            inputs.append(model.add_tensor(f"{name}/merged_bias", [units], np.float32, data=b_real.astype(np.float32)))
        produced.append(model.make_op("FULLY_CONNECTED", inputs, [y], **kwargs))
        return produced


def merge(converted_bytes: bytes, state: bytes) -> bytes:
    model = Model.from_bytes(converted_bytes)
    info = training_info(model)
    if info is None:
        raise ModelError("model was not converted by tflm-train: there is nothing to merge")
    method = info.raw["config"]["method"]
    if method == "adapter":
        raise ConversionError(
            "bottleneck adapters are nonlinear and cannot be folded into the base weights; "
            "deploy the converted model with the state instead"
        )
    header = validate(bytes(state), info.expected_header(), info.state_bytes)
    folder = _Folder(model, parameters(bytes(state), header))
    first, end = info.raw["forward_ops"]
    merged_ops = []
    for op in model.operators[first:end]:
        if model.op_type(op) == ops.FULLY_CONNECTED:
            merged_ops.extend(folder.fold(op))
        elif model.op_type(op).startswith("TFLMT_"):
            raise ConversionError(f"merge: cannot fold {model.op_type(op)}")
        else:
            merged_ops.append(op)
    main = model.main
    main.operators = merged_ops
    main.inputs = [int(main.inputs[i]) for i in info.raw["inputs"]["x"]]
    main.outputs = [int(main.outputs[i]) for i in info.raw["outputs"]["y"]]
    model.remove_metadata(METADATA_NAME)
    model.set_metadata(
        MERGED_METADATA_NAME,
        json.dumps(
            {"base_model_sha256": info.raw["base_model_sha256"], "method": method, "optimizer_steps": header.step}
        ).encode(),
    )
    model.prune()
    return model.to_bytes()
