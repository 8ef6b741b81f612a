"""Reads what `convert` recorded about a converted model."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tflm_train.converter.convert import METADATA_FORMAT, METADATA_NAME
from tflm_train.converter.model_ir import Model, ModelError
from tflm_train.converter.state_format import Header


@dataclass
class TrainingInfo:
    raw: dict

    @property
    def loss(self) -> str:
        return self.raw["loss"]

    @property
    def classes(self) -> int:
        return self.raw["classes"]

    @property
    def task(self) -> str:
        return "regression" if self.loss == "mse" else "classification"

    @property
    def metric(self) -> str:
        return "mse" if self.loss == "mse" else "accuracy"

    def input_index(self, role: str) -> int:
        return self.raw["inputs"][role]

    def output_index(self, role: str) -> int:
        return self.raw["outputs"][role]

    @property
    def state_bytes(self) -> int:
        return self.raw["state"]["bytes"]

    @property
    def param_count(self) -> int:
        return self.raw["state"]["param_count"]

    def expected_header(self) -> Header:
        state = self.raw["state"]
        return Header(
            base_model_hash=self.raw["base_model_hash"],
            layout_hash=state["layout_hash"],
            payload_bytes=state["bytes"] - 64,
            param_count=state["param_count"],
        )

    @property
    def tensors(self) -> list[dict]:
        return self.raw["state"]["tensors"]


_REQUIRED_KEYS = ("loss", "classes", "output_kind", "inputs", "outputs", "forward_ops", "state", "config",
                  "base_model_hash", "base_model_sha256")
_REQUIRED_STATE_KEYS = ("bytes", "param_count", "optimizer_slots", "layout_hash", "tensors")


def training_info(model: Model) -> TrainingInfo | None:
    """The model's tflm-train metadata, or None for a model never converted."""
    payload = model.metadata(METADATA_NAME)
    if payload is None:
        return None
    try:
        raw = json.loads(payload.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError("the model's tflm_train metadata is corrupt") from None
    if raw.get("format") != METADATA_FORMAT:
        raise ModelError(
            f"model was converted by a tflm-train with metadata format {raw.get('format')}; "
            f"this one reads {METADATA_FORMAT}: convert it again"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    state = raw.get("state")
    if not missing and isinstance(state, dict):
        missing = [f"state.{key}" for key in _REQUIRED_STATE_KEYS if key not in state]
    if missing or not isinstance(state, dict) or not isinstance(raw.get("inputs"), dict):
        raise ModelError(f"the model's tflm_train metadata is corrupt (missing {', '.join(missing) or 'fields'})")
    return TrainingInfo(raw)
