"""`tflm-train convert`: turns a .tflite into one that trains itself.

The converted model's main subgraph runs, in order:
  TFLMT_STATE              checks / initializes the training state
  the forward pass         the original operators, target layers adapted
  TFLMT_LOSS               loss and its gradient (modes train and evaluate)
  backward operators       gradient ops, from the loss back to the adapters
  TFLMT_OPTIMIZER          the update (mode train)
Inputs:  the original inputs, then target, learning_rate, mode, state.
Outputs: the original outputs, then loss, state.
Every original buffer is kept byte for byte; the frozen layers still read
them. A "tflm_train" metadata entry (JSON) describes all of the above.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from tflm_train.converter import activation_masks, methods, ops, recompute
from tflm_train.converter.backward import Backward
from tflm_train.converter.config import ConvertConfig
from tflm_train.converter.errors import ConversionError
from tflm_train.converter.losses import default_loss, loss_input
from tflm_train.converter.matching import match_targets
from tflm_train.converter.model_ir import Model, model_hash
from tflm_train.converter.rewrite import Rewrite
from tflm_train.converter.state_format import StateLayout

METADATA_NAME = "tflm_train"
METADATA_FORMAT = 1


@dataclass
class ConvertResult:
    model: bytes
    metadata: dict


def convert(model_bytes: bytes, config: ConvertConfig) -> ConvertResult:
    fisher = config.fisher
    if (fisher is not None) != (config.regularizer == "ewc"):
        raise ConversionError(
            "--regularizer ewc needs base-task data for its Fisher diagonal (--retain-data)"
            if fisher is None
            else "a Fisher diagonal is used by --regularizer ewc only"
        )
    if config.arithmetic == "int8":  # integer training: its own rewrite
        if config.regularizer != "none":
            raise ConversionError("--regularizer is not supported with --arithmetic int8 (float training only)")
        from tflm_train.converter import integer

        return integer.convert(model_bytes, config)
    model = Model.from_bytes(model_bytes)
    if model.metadata(METADATA_NAME) is not None:
        raise ConversionError("this model was already converted by tflm-train")
    main = model.main
    if main.outputs is None or main.inputs is None or len(main.outputs) == 0 or len(main.inputs) == 0:
        raise ConversionError("the model's main subgraph has no inputs or outputs")
    original_inputs = [int(t) for t in main.inputs]
    origin = {id(op): i for i, op in enumerate(model.operators)}

    method = methods.get(config.method)
    kinds = method.eligible_ops
    eligible = [i for i, op in enumerate(model.operators) if model.op_type(op) in kinds]
    targets = []
    if method.uses_targets(config):
        spec = config.targets if config.targets is not None else method.default_targets(len(eligible))
        targets = match_targets(model, spec, eligible, " / ".join(kinds))
    loss = config.loss or method.default_loss(config) or default_loss(model, int(main.outputs[0]))
    if config.class_weighted and loss != "bce":
        raise ConversionError(f"--pos-weight / --neg-weight weight binary cross-entropy, but the loss is {loss}")

    state = model.add_tensor("tflm_train/state", [1], np.uint8, is_variable=True)
    layout = StateLayout(
        optimizer=config.optimizer.kind,
        semantics={"method": config.method, "lora_scale": config.lora_scale, "head_mode": config.head_mode},
    )
    rw = Rewrite(model, config, layout, state, np.random.default_rng(config.seed), origin=origin)
    method.apply(rw, targets)
    if layout.param_count == 0:
        raise ConversionError("the method made no trainable parameters")

    output = int(main.outputs[0])
    prediction, loss_note = loss_input(model, output, loss)
    rw.notes.append(loss_note)
    if loss == "mse":
        output_kind = "values"
    else:
        output_kind = "logits" if prediction == output else "probabilities"
    forward = list(model.operators)

    # Training inputs.
    prediction_shape = model.shape(prediction)
    if 0 in prediction_shape:  # a corrupt file (fuzz finding: a division by zero below)
        raise ConversionError(f"the loss input {model.tensor_name(prediction)} has shape {list(prediction_shape)}: a dimension of 0")
    classes = prediction_shape[-1] if prediction_shape else 1
    if loss == "ce":
        rows = int(np.prod(prediction_shape)) // classes
        target = model.add_tensor("tflm_train/target", [rows], np.int32)
    else:
        target = model.add_tensor("tflm_train/target", prediction_shape, np.float32)
    learning_rate = model.add_tensor("tflm_train/learning_rate", [1], np.float32)
    mode = model.add_tensor("tflm_train/mode", [1], np.int32)

    # Loss, backward pass, update.
    loss_value = model.add_tensor("tflm_train/loss", [1], np.float32)
    loss_grad = model.add_tensor(model.tensor_name(prediction) + "/grad", prediction_shape, np.float32)
    model.append_op(ops.LOSS, [prediction, target, mode], [loss_value, loss_grad], custom_options=ops.loss_options(loss, config.pos_weight, config.neg_weight))
    activation_masks.apply(model, rw.trainable_ops)  # before the backward rules read them
    backward = Backward(rw, mode, origin)
    backward.build(forward, prediction, loss_grad)
    if any(
        model.op_type(op) == "ASSIGN_VARIABLE" and model.inputs_of(op)[1] in backward.influenced for op in forward
    ):
        rw.notes.append(
            "the adapted layers also feed the model's streaming state (ASSIGN_VARIABLE): their gradient "
            "covers the current invocation; earlier frames held in the state count as constants"
        )
    optimizer_op = main.operators[
        model.append_op(
            ops.OPTIMIZER,
            [state, mode, learning_rate],
            [],
            custom_options=config.optimizer.options(config.regularizer, config.reg_lambda),
        )
    ]

    # The state, and the guard that fills it from the initial values in flash.
    base_hash = model_hash(model_bytes)
    initial = layout.initial_blob(base_hash)
    initial_tensor = model.add_tensor(
        "tflm_train/initial_state", [len(initial)], np.uint8, data=np.frombuffer(initial, np.uint8)
    )
    model.tensors[state].shape = np.asarray([layout.state_bytes], dtype=np.int32)
    regularizer = _add_regularizer_inputs(model, optimizer_op, config, layout, initial_tensor, fisher)
    if regularizer is not None:
        penalty = "|w - w0|^2" if config.regularizer == "l2sp" else "sum F (w - w0)^2 (EWC)"
        rw.notes.append(
            f"the optimizer adds the gradient of {config.reg_lambda:g}/2 {penalty}: w0 is the initial state, "
            "in the model; the penalty pulls the adapters back toward it in every update"
        )
    # The state op also reads the mode and the float inputs: a sample with NaN/inf
    # values is turned into mode SKIP before any other op runs (counted, not trained on).
    float_inputs = [t for t in original_inputs if model.dtype(t) == np.float32]
    state_op = model.make_op(
        ops.STATE, [state, initial_tensor, mode] + float_inputs, [], custom_options=ops.version_only_options(ops.STATE)
    )
    main.operators.insert(0, state_op)

    original_outputs = [int(t) for t in main.outputs]
    main.inputs = original_inputs + [target, learning_rate, mode, state]
    main.outputs = original_outputs + [loss_value, state]
    n_in, n_out = len(original_inputs), len(original_outputs)
    chosen, peak_before, peak_after = recompute.choose(model, backward.recomputable, config.recompute)
    recompute.apply(model, chosen)
    if chosen:
        rw.notes.append(
            f"the backward pass recomputes the hidden rows of {', '.join(c.layer for c in chosen)} instead of "
            f"keeping them: activation peak {peak_before:,} -> {peak_after:,} bytes (computed from the graph)"
        )
    metadata = {
        "format": METADATA_FORMAT,
        "base_model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "base_model_hash": base_hash,
        "config": config.to_json(),
        "loss": loss,
        "classes": int(classes),
        "output_kind": output_kind,
        "inputs": {"x": list(range(n_in)), "target": n_in, "learning_rate": n_in + 1, "mode": n_in + 2, "state": n_in + 3},
        "outputs": {"y": list(range(n_out)), "loss": n_out, "state": n_out + 1},
        "forward_ops": [1, 1 + len(forward)],
        "state": layout.to_json(),
        "adapted": rw.adapted,
        "notes": rw.notes,
    }
    if regularizer is not None:
        metadata["regularizer"] = regularizer
    model.set_metadata(METADATA_NAME, json.dumps(metadata).encode())
    return ConvertResult(model.sealed_bytes(), metadata)  # with its CRC (integrity.py)


def _add_regularizer_inputs(model: Model, optimizer_op, config: ConvertConfig, layout, initial_tensor, fisher):
    """Gives the optimizer op w0 (the initial state: header, then the initial
    parameters; no extra bytes) and, for EWC, the Fisher diagonal as a float32
    constant. Returns the metadata entry, or None without a regularizer."""
    if config.regularizer == "none":
        return None
    inputs = [initial_tensor]
    entry = {"kind": config.regularizer, "lambda": config.reg_lambda, "anchor": "initial_state"}
    if config.regularizer == "ewc":
        fisher = np.asarray(fisher, dtype=np.float32).reshape(-1)
        if fisher.size != layout.param_count:
            raise ConversionError(
                f"the Fisher diagonal has {fisher.size} values, the model trains {layout.param_count} parameters"
            )
        if not (np.isfinite(fisher).all() and (fisher >= 0).all()):
            raise ConversionError("the Fisher diagonal must hold finite values >= 0")
        inputs.append(model.add_tensor("tflm_train/fisher", [fisher.size], np.float32, data=fisher))
        entry.update(fisher_bytes=4 * fisher.size, fisher_mean=float(fisher.mean()), fisher_max=float(fisher.max()))
    optimizer_op.inputs = np.concatenate([np.asarray(optimizer_op.inputs, np.int32), np.asarray(inputs, np.int32)])
    return entry
