"""A new trainable classifier head, for new classes or a new task.

replace: the last target layer (default: the model's last FULLY_CONNECTED)
         becomes a float32 layer whose weights and bias all train; a SOFTMAX
         or LOGISTIC that followed it is kept, in float32. With as many
         classes as before it starts from the old weights, otherwise from
         Keras' default initialization.
append:  a new trainable layer (and SOFTMAX) on top of the model's output,
         e.g. a classifier on an embedding model.
The converted model's output becomes float32 probabilities (or logits).
"""

from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tflm_train.converter import ops
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.layers import linear_target
from tflm_train.converter.rewrite import Rewrite, glorot_uniform
from tflm_train.converter.methods import register
from tflm_train.converter.methods.base import MethodSpec

# Ops allowed between the replaced layer and the model output.
_OUTPUT_CHAIN = {"SOFTMAX", "LOGISTIC", "QUANTIZE", "DEQUANTIZE", "RESHAPE"}


def _output_chain(rw: Rewrite, start: int) -> tuple[list[schema.OperatorT], int]:
    """The ops from tensor `start` straight to a model output, and that output."""
    model = rw.model
    outputs = [int(t) for t in model.main.outputs]
    consumers = model.consumers()
    chain, tensor = [], start
    while tensor not in outputs:
        readers = consumers.get(tensor, [])
        if len(readers) != 1 or model.op_type(model.operators[readers[0]]) not in _OUTPUT_CHAIN:
            raise ConversionError("head: the replaced layer must lead straight to the model output")
        op = model.operators[readers[0]]
        chain.append(op)
        tensor = model.outputs_of(op)[0]
    return chain, tensor


def _add_trainable_dense(rw: Rewrite, x: int, weights: np.ndarray, bias: np.ndarray, activation: int, name: str):
    model = rw.model
    units, in_features = weights.shape
    batches = int(np.prod(model.shape(x))) // in_features
    w = rw.layout.add(f"{name}/kernel", "weight", name, weights)
    b = rw.layout.add(f"{name}/bias", "bias", name, bias)
    logits = model.add_tensor(f"{name}/logits", [batches, units], np.float32)
    options = ops.LinearLayer.fully_connected(
        in_features, units, activation, weight_offset=w.offset, bias_offset=b.offset
    )
    op = model.make_op(ops.FULLY_CONNECTED, [x, -1, -1, rw.state], [logits], custom_options=options.options())
    rw.trainable_ops.append(op)
    return op, logits, w.size + b.size


def _float_activation(rw: Rewrite, kind: str, logits: int, beta: float, name: str):
    model = rw.model
    out = model.add_tensor(f"{name}/{kind.lower()}", model.shape(logits), np.float32)
    if kind == "SOFTMAX":
        options = schema.SoftmaxOptionsT()
        options.beta = beta
        return model.make_op(
            "SOFTMAX", [logits], [out], builtin_options=options, builtin_options_type=schema.BuiltinOptions.SoftmaxOptions
        ), out
    return model.make_op(kind, [logits], [out]), out


def apply(rw: Rewrite, targets: list[int]) -> None:
    if rw.config.head_mode == "append":
        _append(rw)
    else:
        _replace(rw, targets[-1])


def _replace(rw: Rewrite, target: int) -> None:
    model = rw.model
    layer = linear_target(model, target)
    if layer.kind != ops.LinearKind.FULLY_CONNECTED:
        raise ConversionError("head: the replaced layer must be a FULLY_CONNECTED")
    chain, old_output = _output_chain(rw, layer.y)
    int8_chain = _int8_chain(model, layer, chain)
    classes = rw.config.classes or layer.units
    name = layer.short + "/head"
    if classes == layer.units:
        weights = layer.weights_real
        bias = layer.bias_real if layer.bias_real is not None else np.zeros(classes, np.float32)
        rw.notes.append(f"head replaces {layer.short} ({classes} classes, starting from its weights)")
    else:
        weights = glorot_uniform(rw.rng, (classes, layer.in_features))
        bias = np.zeros(classes, np.float32)
        rw.notes.append(f"head replaces {layer.short} with {classes} new classes")
    new_op, logits, params = _add_trainable_dense(rw, layer.x, weights, bias, layer.activation, name)
    rw.replace_op(layer.op, new_op)
    new_output = logits
    anchor = new_op
    for op in chain:
        kind = model.op_type(op)
        model.main.operators.remove(op)
        if kind in ("SOFTMAX", "LOGISTIC"):
            beta = op.builtinOptions.beta if kind == "SOFTMAX" and op.builtinOptions is not None else 1.0
            act_op, new_output = _float_activation(rw, kind, new_output, beta, name)
            rw.insert_after(anchor, act_op)
            anchor = act_op
    model.main.outputs = [new_output if int(t) == old_output else int(t) for t in model.main.outputs]
    entry = {"index": layer.index, "name": layer.short, "op": "FULLY_CONNECTED", "params": params}
    if int8_chain is not None:
        entry["int8_chain"] = int8_chain
    rw.adapted.append(entry)


# Output ops after an int8 head that merge rebuilds in int8 (converter/merge.py):
# a LOGISTIC, then QUANTIZEs. (A SOFTMAX head stays float32 when merged: its
# int8 logits would need the trained logits' range, which no data-free rule gives.)
_REQUANTIZABLE_CHAIN = {"LOGISTIC", "QUANTIZE"}


def _int8_chain(model, layer, chain) -> list[dict] | None:
    """For a replaced int8 layer: the ops between it and the model output,
    with their output types and quantization, so that `merge` can requantize
    the trained float head and give the merged model the original's int8 /
    uint8 interface. None when the layer was not int8 or the chain holds
    other ops (merge then keeps the head in float32)."""
    if model.dtype(layer.x) != np.int8 or model.dtype(layer.y) != np.int8:
        return None
    kinds = [model.op_type(op) for op in chain]
    if not kinds or kinds[0] != "LOGISTIC" or any(kind not in _REQUANTIZABLE_CHAIN for kind in kinds):
        return None
    entries = []
    for op in chain:
        out = model.outputs_of(op)[0]
        quant = model.quant(out)
        if quant is None or quant.per_channel:
            return None
        entries.append({"op": model.op_type(op), "dtype": np.dtype(model.dtype(out)).name,
                        "scale": float(quant.scale[0]), "zero_point": int(quant.zero_point[0])})
    return entries


def _append(rw: Rewrite) -> None:
    model = rw.model
    features_tensor = int(model.main.outputs[0])
    features = model.shape(features_tensor)[-1]
    classes = rw.config.classes or features
    name = "head"
    weights = glorot_uniform(rw.rng, (classes, features))
    new_op, logits, params = _add_trainable_dense(rw, features_tensor, weights, np.zeros(classes, np.float32), 0, name)
    model.main.operators.append(new_op)
    output = logits
    if rw.config.loss in (None, "ce"):
        act_op, output = _float_activation(rw, "SOFTMAX", logits, 1.0, name)
        model.main.operators.append(act_op)
    model.main.outputs = [output] + [int(t) for t in model.main.outputs[1:]]
    rw.notes.append(f"new {classes}-class head appended after the model output ({features} features)")
    rw.adapted.append({"index": len(model.operators), "name": name, "op": "FULLY_CONNECTED", "params": params})


def _uses_targets(config) -> bool:
    return config.head_mode != "append"  # an appended head adapts no layer


def _default_loss(config) -> str | None:
    # An appended head ends in a new softmax: cross-entropy, whatever the
    # base model's output was.
    return "ce" if config.head_mode == "append" else None


SPEC = register(
    MethodSpec(
        name="head",
        help="a new trainable float32 classifier head (replaces the last layer, or --head-mode append)",
        apply=apply,
        eligible_ops=("FULLY_CONNECTED",),
        default_targets=lambda eligible: "last:1",
        default_targets_help="last:1",
        merge_note="the trained head becomes an ordinary FULLY_CONNECTED layer",
        options={"classes": None, "head_mode": "replace"},
        board_max_layers=1,
        uses_targets=_uses_targets,
        default_loss=_default_loss,
        exact_at_init=False,  # float32 logits where the original rounded to int8
    )
)
