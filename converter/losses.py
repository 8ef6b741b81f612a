"""Where the loss attaches, and which loss fits a model's output."""

from __future__ import annotations

from tflm_train.converter.errors import ConversionError
from tflm_train.converter.model_ir import Model

# Ops that do not change what a value means; the loss looks through them.
_TRANSPARENT = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE"}


def _source(model: Model, tensor: int) -> tuple[int, str | None]:
    """Follows `tensor` back through transparent ops: (tensor, producing op type)."""
    producers = model.producers()
    while tensor in producers:
        op = model.operators[producers[tensor]]
        kind = model.op_type(op)
        if kind not in _TRANSPARENT:
            return tensor, kind
        tensor = model.inputs_of(op)[0]
    return tensor, None


def default_loss(model: Model, output: int) -> str:
    """ce after a SOFTMAX, bce after a LOGISTIC, mse otherwise."""
    _, kind = _source(model, output)
    return {"SOFTMAX": "ce", "LOGISTIC": "bce"}.get(kind, "mse")


def loss_input(model: Model, output: int, loss: str) -> tuple[int, str]:
    """The tensor the loss op reads, and a note saying what it is.

    Cross-entropy reads the logits before the final SOFTMAX (binary
    cross-entropy those before a final LOGISTIC): stable, and exact even when
    a quantized output has rounded a probability to zero.
    """
    if loss == "mse":
        return output, "mse on the model output"
    tensor, kind = _source(model, output)
    wanted = "SOFTMAX" if loss == "ce" else "LOGISTIC"
    if kind == wanted:
        op = model.operators[model.producers()[tensor]]
        if loss == "ce" and op.builtinOptions is not None and abs(op.builtinOptions.beta - 1.0) > 1e-6:
            raise ConversionError("cross-entropy after a SOFTMAX with beta != 1 is not supported")
        return model.inputs_of(op)[0], f"{loss} on the logits before the final {wanted}"
    if kind in ("SOFTMAX", "LOGISTIC"):
        raise ConversionError(f"loss {loss} does not fit a model that ends in {kind}")
    return tensor, f"{loss} treating the model output as logits"
