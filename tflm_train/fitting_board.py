"""`convert --board`: the most capable conversion whose training fits a board.

Tries, from the most capable down, more adapted layers before a higher rank
(LoRA rank or adapter width), converting each candidate and measuring its
training arena in the TFLM interpreter; the first that fits the board's SRAM
wins. What is varied comes from the method's MethodSpec: methods without a
rank (bias, head) only vary the number of layers, up to board_max_layers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from tflm_train.boards import Board
from tflm_train.converter import ConversionError, ConvertConfig, ConvertResult, convert
from tflm_train.converter import methods
from tflm_train.converter.model_ir import Model
from tflm_train.memory import smallest_arena

RANKS = (8, 4, 2, 1)


@dataclass
class BoardFit:
    result: ConvertResult
    arena_bytes: int
    picked: str  # e.g. "targets last:2, rank 4"


def fit_to_board(
    model_bytes: bytes, config: ConvertConfig, board: Board, on_try: Callable[[str], None] | None = None
) -> BoardFit:
    spec = methods.get(config.method)
    model = Model.from_bytes(model_bytes)
    layers = sum(1 for op in model.operators if model.op_type(op) in spec.eligible_ops)
    most = min(spec.board_max_layers, layers)
    ranks = RANKS if spec.has_rank else (config.r,)
    for count in range(most, 0, -1):
        for rank in ranks:
            candidate = dataclasses.replace(config, targets=f"last:{count}", r=rank)
            result = convert(model_bytes, candidate)
            arena = smallest_arena(result.model)
            label = f"targets last:{count}" + (f", rank {rank}" if len(ranks) > 1 else "")
            if on_try is not None:
                verdict = "fits" if arena <= board.sram_bytes else "too big"
                on_try(f"{label}: training arena {arena:,} B ({verdict})")
            if arena <= board.sram_bytes:
                return BoardFit(result, arena, label)
    raise ConversionError(f"no {config.method} conversion of this model trains within {board.name}'s "
                          f"{board.sram_bytes:,} bytes of SRAM")
