"""Which conversion to run: a plain convert, a board fit or a budget search.

`tflm-train convert` and the Python API's `convert` both come here, so the
choice is made in one place:
  --board, a method that fits by layers and rank   the most capable conversion
                                                   whose measured training
                                                   arena fits the board's SRAM
                                                   (tflm_train/fitting_board.py)
  --board or --budget-bytes, sparse                which layers' biases and
                                                   weights train, by measured
                                                   contribution on the user's
                                                   data, within the budget
                                                   (tflm_train/sparse.py); the
                                                   board's SRAM is the budget
  neither                                          one conversion as configured
What each method allows comes from its MethodSpec (converter/methods/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tflm_train import boards
from tflm_train.converter import ConvertConfig, ConvertResult, methods
from tflm_train.converter import convert as run_convert
from tflm_train.errors import UserError
from tflm_train.memory import check_prepares


@dataclass
class ConvertPlan:
    """A conversion and how it was chosen (what `convert` reports)."""

    result: ConvertResult
    config: ConvertConfig
    board: str | None = None
    budget_bytes: int | None = None
    # Measured training arena of the chosen conversion (board fit / budget).
    arena_bytes_training: int | None = None
    picked: str | None = None  # board fit: e.g. "targets last:2, rank 4"
    weight_layers: list[str] = field(default_factory=list)  # budget: layers whose weights train
    sparse: dict | None = None  # budget: the contribution analysis (SparseChoice.as_dict)

    def summary(self) -> dict:
        meta = self.result.metadata
        out = {
            "method": self.config.method,
            "loss": meta["loss"],
            "optimizer": self.config.optimizer.kind,
            "adapted": meta["adapted"],
            "trainable_params": meta["state"]["param_count"],
            "state_bytes": meta["state"]["bytes"],
            "model_bytes": len(self.result.model),
            "notes": meta["notes"],
        }
        if self.picked is not None:
            out["board"] = self.board
            out["arena_bytes_training"] = self.arena_bytes_training
            out["picked"] = self.picked
        if self.budget_bytes is not None:
            out["budget_bytes"] = self.budget_bytes
            out["arena_bytes_training"] = self.arena_bytes_training
            out["weight_layers"] = self.weight_layers
        if self.sparse is not None:
            out["bias_layers"] = self.sparse["bias_layers"]
            out["channel_layers"] = self.sparse["channel_layers"]
            out["sparse_choice"] = self.sparse
        return out


def plan_convert(
    model_bytes: bytes,
    config: ConvertConfig,
    board: str | None = None,
    budget_bytes: int | None = None,
    on_try: Callable[[str], None] | None = None,
    data: tuple[np.ndarray, np.ndarray] | None = None,
) -> ConvertPlan:
    """Converts as asked; with a board or a budget, the best measured fit.

    on_try gets one line per candidate measured (board fit, budget search).
    data: representative (x, y) samples for the sparse budget search's
    contribution analysis (without: parts ranked from the output back).
    The original is first prepared and invoked once in a guarded child
    process: a corrupt .tflite can pass every structural check and still
    crash the stock interpreter, and the converted model would keep that.
    """
    check_prepares(model_bytes)
    plan = _plan(model_bytes, config, board, budget_bytes, on_try, data)
    # The converted model too, once, before anything is written: a corrupt
    # original can prepare and run cleanly and still give a converted model a
    # stock kernel crashes on (fuzz finding: MEAN in its first predict).
    check_prepares(plan.result.model)
    return plan


def _plan(model_bytes, config, board, budget_bytes, on_try, data) -> ConvertPlan:
    spec = methods.get(config.method)
    if board is not None:
        try:
            profile = boards.board(board)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if spec.board_fits_layers:
            from tflm_train.fitting_board import fit_to_board

            fitted = fit_to_board(model_bytes, config, profile, on_try=on_try)
            return ConvertPlan(fitted.result, config, board=board, arena_bytes_training=fitted.arena_bytes,
                               picked=fitted.picked)
        if budget_bytes is None:
            budget_bytes = profile.sram_bytes
    if budget_bytes is not None:
        if spec.board_fits_layers:
            raise UserError("--budget-bytes chooses a sparse update: use it with --method sparse")
        if config.sparse_weights or config.sparse_biases or config.sparse_channels:
            raise UserError("--sparse-weights / --sparse-biases / --sparse-channels name the parts by hand: "
                            "not with a budget or a board")
        from tflm_train.sparse import choose_sparse

        choice = choose_sparse(model_bytes, config, budget_bytes, on_try=on_try, data=data)
        return ConvertPlan(choice.result, config, board=board, budget_bytes=budget_bytes,
                           arena_bytes_training=choice.arena_bytes, weight_layers=choice.weight_layers,
                           sparse=choice.as_dict())
    return ConvertPlan(run_convert(model_bytes, config), config)


__all__ = ["ConvertPlan", "plan_convert"]
