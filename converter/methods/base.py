"""What a parameter-efficient method declares about itself: its MethodSpec.

Each method module under converter/methods/ defines one MethodSpec and
registers it; nothing else in the project names a method. Config validation,
convert, merge, the CLI's --method choices and help, board fitting and the
test matrices all read these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from tflm_train.converter.layers import LINEAR_OPS

if TYPE_CHECKING:
    from tflm_train.converter.config import ConvertConfig
    from tflm_train.converter.rewrite import Rewrite

LINEAR_KINDS = tuple(LINEAR_OPS)  # FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D


def last_two(eligible: int) -> str:
    """The usual default: the last two eligible layers."""
    return "last:2"


@dataclass(frozen=True)
class MethodSpec:
    """One method's policy; see converter/methods/lora.py for a full example."""

    name: str  # --method value, as in peft where the meaning is the same
    help: str  # one line, shown by `tflm-train convert --help`
    apply: Callable[["Rewrite", list[int]], None]  # rewrites the target layers
    # Stock operator types the method can adapt (`inspect` marks them).
    eligible_ops: tuple[str, ...] = LINEAR_KINDS
    # --targets when none is given, from the number of eligible layers.
    default_targets: Callable[[int], str] = last_two
    default_targets_help: str = "last:2"
    # Whether `r` means something (LoRA rank, adapter bottleneck width); board
    # fitting then also tries several ranks.
    has_rank: bool = False
    # Whether `merge` folds a trained state into a plain .tflite; `merge_note`
    # says how, or why it cannot (then it is the error message).
    merges: bool = True
    merge_note: str = ""
    # ConvertConfig fields only this method reads, with their neutral values:
    # giving another value with another method is refused.
    options: dict[str, Any] = field(default_factory=dict)
    # Board fitting (tflm_train/fitting_board.py): the most layers tried.
    board_max_layers: int = 3
    # Whether board fitting varies layers and rank (False: the method has its
    # own search, e.g. sparse's measured budget, tflm_train/sparse.py).
    board_fits_layers: bool = True
    # Whether the method adapts existing layers (False, e.g. a head appended
    # after the output: --targets is not read).
    uses_targets: Callable[["ConvertConfig"], bool] = lambda config: True
    # The loss when none is given and the method decides it (None: the
    # converter picks one that fits the model's output).
    default_loss: Callable[["ConvertConfig"], str | None] = lambda config: None
    # The converted model's first prediction equals the original's, bit for
    # bit (False where a layer is rebuilt in float32, like a new head).
    exact_at_init: bool = True
