"""What `tflm-train convert` is asked to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from tflm_train.converter import methods
from tflm_train.converter.errors import ConversionError
from tflm_train.converter import ops
from tflm_train.converter.ops import OptimizerConfig

# Names for type checkers; tests/test_api.py checks MethodName against the
# method registry and OptimizerName against the optimizer op's kinds.
MethodName = Literal["lora", "adapter", "bias", "head", "sparse"]
LossName = Literal["ce", "mse", "bce"]
OptimizerName = Literal["sgd", "momentum", "adam"]
RecomputeMode = Literal["auto", "always", "never"]
HeadMode = Literal["replace", "append"]
RegularizerName = Literal["none", "l2sp", "ewc"]
Arithmetic = Literal["float", "int8"]
Rounding = Literal["stochastic", "nearest"]

LOSSES: tuple[str, ...] = get_args(LossName)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
RECOMPUTE_MODES: tuple[str, ...] = get_args(RecomputeMode)
HEAD_MODES: tuple[str, ...] = get_args(HeadMode)
REGULARIZERS: tuple[str, ...] = get_args(RegularizerName)


@dataclass
class ConvertConfig:
    """Options of one conversion; field names follow peft where they can.

    method     a registered method (converter/methods/: lora | adapter | bias |
               head | sparse); fields below marked "head:", "sparse:", ... are
               that method's own options and are refused with any other
    r          lora / adapter: LoRA rank, or the adapter's bottleneck width
    lora_alpha lora: LoRA scale is lora_alpha / r (None: lora_alpha = r, scale 1)
    targets    target layers: "last:N", operator indices, or names (comma list);
               None: the method's default (last:2; head last:1; sparse: all)
    loss       ce | mse | bce (None: chosen from the model's output)
    classes    head: number of classes (None: as many as the replaced layer)
    head_mode  head: "replace" the last layer, or "append" after the output
    seed       initialization of LoRA A / adapter down-projection / new heads
    sparse_weights  sparse: target layers whose full weights also train
    sparse_biases   sparse: target layers whose bias trains ("": every target layer)
    recompute  auto | always | never: whether the backward pass recomputes the
               hidden rows of LoRA and adapters instead of keeping them (auto:
               where that lowers the step's activation peak; converter/recompute.py)
    regularizer none | l2sp | ewc: a penalty pulling the trainable parameters
               toward their initial values w0, against forgetting (l2sp:
               reg_lambda/2 |w - w0|^2; ewc: reg_lambda/2 sum F_i (w_i - w0_i)^2,
               F the Fisher diagonal that convert(fisher=...) receives, see
               tflm_train/continual.py); carried by the optimizer op
    reg_lambda the penalty's strength (>= 0)
    fisher     ewc: the Fisher diagonal, one float per trainable parameter in
               state order (tflm_train.continual.fisher_diagonal computes it
               from base-task data); stored in the model as a constant
    pos_weight, neg_weight  loss bce: class weights carried by the loss op
               (options version 2): the loss and gradient of a target's
               positive share are scaled by pos_weight, the rest by
               neg_weight (a wake word: few positive invocations per clip
               against many negatives); 1, 1: the plain loss
    arithmetic float (float32 gradients and update) | int8 (integer training:
               int16 LoRA, integer backward pass and SGD; converter/integer.py)
    rounding   int8: the integer SGD's rounding, stochastic | nearest
    """

    method: MethodName = "lora"
    r: int = 4
    lora_alpha: float | None = None
    targets: str | None = None
    loss: LossName | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    classes: int | None = None
    head_mode: HeadMode = "replace"
    seed: int = 0
    sparse_weights: str = ""
    sparse_biases: str = ""
    recompute: RecomputeMode = "auto"
    regularizer: RegularizerName = "none"
    reg_lambda: float = 0.0
    fisher: np.ndarray | None = field(default=None, repr=False, compare=False)
    arithmetic: Arithmetic = "float"
    rounding: Rounding = "stochastic"
    pos_weight: float = 1.0
    neg_weight: float = 1.0

    def __post_init__(self) -> None:
        spec = methods.get(self.method)  # refuses an unknown name
        for other in methods.specs():
            for option, neutral in other.options.items():
                if option not in spec.options and getattr(self, option) != neutral:
                    owners = [s.name for s in methods.specs() if option in s.options]
                    raise ConversionError(
                        f"{option} is an option of method {' / '.join(owners)}, not of {self.method}"
                    )
        if self.r < 1:
            raise ConversionError("rank must be at least 1")
        if self.loss is not None and self.loss not in LOSSES:
            raise ConversionError(f"unknown loss {self.loss!r} (choose from {', '.join(LOSSES)})")
        if self.optimizer.accumulate < 1:
            raise ConversionError("--accumulate must be at least 1")
        if self.optimizer.clip_norm < 0:
            raise ConversionError("--clip must be >= 0")
        if self.optimizer.kind not in ops.OPTIMIZER_KINDS:
            raise ConversionError(f"unknown optimizer {self.optimizer.kind!r} (choose from {', '.join(OPTIMIZERS)})")
        if self.head_mode not in HEAD_MODES:
            raise ConversionError("head mode must be 'replace' or 'append'")
        if self.recompute not in RECOMPUTE_MODES:
            raise ConversionError(f"--recompute must be one of {', '.join(RECOMPUTE_MODES)}")
        if self.regularizer not in REGULARIZERS:
            raise ConversionError(f"--regularizer must be one of {', '.join(REGULARIZERS)}")
        if not (self.reg_lambda >= 0 and self.reg_lambda < float("inf")):
            raise ConversionError("--reg-lambda must be a finite value >= 0")
        if self.regularizer != "none" and self.reg_lambda == 0:
            raise ConversionError(f"--regularizer {self.regularizer} needs --reg-lambda > 0")
        if self.regularizer == "none" and self.reg_lambda != 0:
            raise ConversionError("--reg-lambda needs --regularizer l2sp or ewc")
        if self.arithmetic not in get_args(Arithmetic):
            raise ConversionError(f"--arithmetic must be one of {', '.join(get_args(Arithmetic))}")
        if self.rounding not in get_args(Rounding):
            raise ConversionError(f"--rounding must be one of {', '.join(get_args(Rounding))}")
        if self.rounding != "stochastic" and self.arithmetic == "float":
            raise ConversionError("--rounding is an option of --arithmetic int8")
        for flag, weight in (("--pos-weight", self.pos_weight), ("--neg-weight", self.neg_weight)):
            if not (weight >= 0 and weight < float("inf")):
                raise ConversionError(f"{flag} must be a finite value >= 0")
        if self.class_weighted and self.arithmetic != "float":
            raise ConversionError("--pos-weight / --neg-weight are not supported with --arithmetic int8 (float training only)")
        if self.class_weighted and self.loss is not None and self.loss != "bce":
            raise ConversionError("--pos-weight / --neg-weight weight binary cross-entropy: use them with --loss bce")
        if self.classes is not None and self.classes < 1:
            raise ConversionError("--classes must be at least 1")

    @property
    def class_weighted(self) -> bool:
        return self.pos_weight != 1.0 or self.neg_weight != 1.0

    @property
    def lora_scale(self) -> float:
        alpha = self.r if self.lora_alpha is None else self.lora_alpha
        return float(alpha) / self.r

    def to_json(self) -> dict:
        extra = {} if self.arithmetic == "float" else {"arithmetic": self.arithmetic, "rounding": self.rounding}
        out = extra | {
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
            "sparse_biases": self.sparse_biases,
            "recompute": self.recompute,
        }
        if self.class_weighted:  # unweighted metadata stays as it was
            out.update(pos_weight=self.pos_weight, neg_weight=self.neg_weight)
        if self.regularizer != "none":  # unregularized metadata stays as it was
            out.update(regularizer=self.regularizer, reg_lambda=self.reg_lambda)
        return out
