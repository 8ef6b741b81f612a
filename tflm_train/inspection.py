"""`tflm-train inspect`: what is in a model, layer by layer."""

from __future__ import annotations

import numpy as np

from tflm_train.converter.layers import short_name
from tflm_train.converter.model_ir import Model
from tflm_train.converter.training_info import training_info


def describe(model_bytes: bytes, path: str = "model") -> dict:
    model = Model.from_bytes(model_bytes)
    layers = []
    total = 0
    for index, op in enumerate(model.operators):
        inputs = [t for t in model.inputs_of(op) if t >= 0]
        outputs = model.outputs_of(op)
        params = sum(int(np.prod(model.shape(t))) for t in inputs if model.constant(t) is not None)
        if model.op_type(op) == "TFLMT_STATE":
            params = 0  # its constant is the initial training state, counted below
        total += params
        activations = [t for t in inputs if model.constant(t) is None] + outputs
        dtype = str(model.dtype(activations[0])) if activations else ""
        name = model.tensor_name(outputs[0]) if outputs else ""
        layers.append(
            {
                "index": index,
                "op": model.op_type(op),
                "name": short_name(name) if name else "",
                "full_name": name,
                "params": params,
                "input_shapes": [list(model.shape(t)) for t in inputs],
                "output_shapes": [list(model.shape(t)) for t in outputs],
                "dtype": dtype,
            }
        )
    report = {
        "model": path,
        "bytes": len(model_bytes),
        "layers": layers,
        "params": total,
        "inputs": [{"shape": list(model.shape(int(t))), "dtype": str(model.dtype(int(t)))} for t in model.main.inputs],
        "outputs": [{"shape": list(model.shape(int(t))), "dtype": str(model.dtype(int(t)))} for t in model.main.outputs],
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
