"""`tflm-train inspect`: what is in a model, layer by layer."""

from __future__ import annotations

import numpy as np

from tflm_train.converter import methods
from tflm_train.converter.layers import LINEAR_OPS, short_name, unique_layer_name
from tflm_train.converter.model_ir import Model
from tflm_train.converter.training_info import training_info


# Layers whose int32 constants are biases; elsewhere they are shapes, axes or
# slice bounds, which are not parameters.
_LINEAR = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV",
           "TFLMT_FULLY_CONNECTED", "TFLMT_CONV_2D", "TFLMT_DEPTHWISE_CONV_2D"}
# Operator types some registered method can adapt (converter/methods/).
ADAPTABLE = frozenset(op for spec in methods.specs() for op in spec.eligible_ops)


def _is_parameter(model: Model, op, tensor: int) -> bool:
    if model.constant(tensor) is None or model.op_type(op) == "TFLMT_STATE":
        return False  # TFLMT_STATE's constant is the initial training state
    return model.op_type(op) in _LINEAR or model.type_name(tensor) in ("float32", "int8", "int16")


def describe(model_bytes: bytes, path: str = "model") -> dict:
    model = Model.from_bytes(model_bytes)
    layers = []
    total = 0
    for index, op in enumerate(model.operators):
        inputs = [t for t in model.inputs_of(op) if t >= 0]
        outputs = model.outputs_of(op)
        params = sum(int(np.prod(model.shape(t))) for t in inputs if _is_parameter(model, op, t))
        total += params
        activations = [t for t in inputs if model.constant(t) is None] + outputs
        dtype = model.type_name(activations[0]) if activations else ""
        name = model.tensor_name(outputs[0]) if outputs else ""
        layers.append(
            {
                "index": index,
                "op": model.op_type(op),
                "adaptable": model.op_type(op) in ADAPTABLE,
                "name": unique_layer_name(model, index) if model.op_type(op) in LINEAR_OPS else short_name(name) if name else "",
                "full_name": name,
                "params": params,
                "input_shapes": [list(model.shape(t)) for t in inputs],
                "output_shapes": [list(model.shape(t)) for t in outputs],
                "dtype": dtype,
            }
        )
    report = {
        "model": path,
        # What --targets last:N counts (head: FULLY_CONNECTED layers only).
        "adaptable_layers": [layer["index"] for layer in layers if layer["adaptable"]],
        "bytes": len(model_bytes),
        "layers": layers,
        "params": total,
        "inputs": [{"shape": list(model.shape(int(t))), "dtype": model.type_name(int(t))} for t in model.main.inputs],
        "outputs": [{"shape": list(model.shape(int(t))), "dtype": model.type_name(int(t))} for t in model.main.outputs],
    }
    info = training_info(model)
    if info is not None:
        config = info.raw["config"]
        report["training"] = {
            "method": config["method"],
            "loss": info.loss,
            "optimizer": config["optimizer"]["kind"],
            "trainable_params": info.param_count,
            "state_bytes": info.state_bytes,
            "adapted": info.raw["adapted"],
            "inputs": info.raw["inputs"],
            "outputs": info.raw["outputs"],
        }
    return report
