"""What `tflm-train convert` is asked to do."""

from __future__ import annotations

from dataclasses import dataclass, field

from tflm_train.converter.ops import OptimizerConfig

METHODS = ("lora", "adapter", "bias", "head", "sparse")
LOSSES = ("ce", "mse", "bce")
RECOMPUTE_MODES = ("auto", "always", "never")


class ConversionError(ValueError):
    """The model cannot be converted as asked (message says why)."""


@dataclass
class ConvertConfig:
    """Options of one conversion; field names follow peft where they can.

    method     lora | adapter | bias | head | sparse
    r          LoRA rank, or the adapter's bottleneck width
    lora_alpha LoRA scale is lora_alpha / r (None: lora_alpha = r, scale 1)
    targets    target layers: "last:N", operator indices, or names (comma list);
               None: the method's default (last:2; head last:1; sparse: all)
    loss       ce | mse | bce (None: chosen from the model's output)
    classes    head: number of classes (None: as many as the replaced layer)
    head_mode  head: "replace" the last layer, or "append" after the output
    seed       initialization of LoRA A / adapter down-projection / new heads
    sparse_weights  sparse: target layers whose full weights also train
    recompute  auto | always | never: whether the backward pass recomputes the
               hidden rows of LoRA and adapters instead of keeping them (auto:
               where that lowers the step's activation peak; converter/recompute.py)
    """

    method: str = "lora"
    r: int = 4
    lora_alpha: float | None = None
    targets: str | None = None
    loss: str | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    classes: int | None = None
    head_mode: str = "replace"
    seed: int = 0
    sparse_weights: str = ""
    recompute: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConversionError(f"unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.r < 1:
            raise ConversionError("rank must be at least 1")
        if self.loss is not None and self.loss not in LOSSES:
            raise ConversionError(f"unknown loss {self.loss!r} (choose from {', '.join(LOSSES)})")
        if self.optimizer.accumulate < 1:
            raise ConversionError("--accumulate must be at least 1")
        if self.optimizer.clip_norm < 0:
            raise ConversionError("--clip must be >= 0")
        if self.head_mode not in ("replace", "append"):
            raise ConversionError("head mode must be 'replace' or 'append'")
        if self.recompute not in RECOMPUTE_MODES:
            raise ConversionError(f"--recompute must be one of {', '.join(RECOMPUTE_MODES)}")
        if self.classes is not None and self.classes < 1:
            raise ConversionError("--classes must be at least 1")

    @property
    def lora_scale(self) -> float:
        alpha = self.r if self.lora_alpha is None else self.lora_alpha
        return float(alpha) / self.r

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "r": self.r,
            "lora_alpha": self.r if self.lora_alpha is None else self.lora_alpha,
            "targets": self.targets,
            "loss": self.loss,
            "optimizer": vars(self.optimizer),
            "classes": self.classes,
            "head_mode": self.head_mode,
            "seed": self.seed,
            "sparse_weights": self.sparse_weights,
            "recompute": self.recompute,
        }
