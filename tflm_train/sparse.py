"""Chooses a sparse update that fits a memory budget, by measuring.

Every target layer trains its bias; then, from the last layer back, a layer's
full weights are added if the converted model's training arena - measured in
the TFLM interpreter (tflm_train/memory.py) - stays within the budget. Later
layers come first: their gradients are the cheapest to reach.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from tflm_train.converter import ConversionError, ConvertConfig, ConvertResult, convert
from tflm_train.memory import smallest_arena


@dataclass
class SparseChoice:
    result: ConvertResult
    arena_bytes: int
    weight_layers: list[str]  # names of the layers whose weights train
    tried: list[tuple[str, int]]  # (layer, measured arena) for each layer tried


def choose_sparse(
    model_bytes: bytes,
    config: ConvertConfig,
    budget_bytes: int,
    on_try: Callable[[str, int, bool], None] | None = None,
) -> SparseChoice:
    base = dataclasses.replace(config, method="sparse", sparse_weights="")
    result = convert(model_bytes, base)
    arena = smallest_arena(result.model)
    if arena > budget_bytes:
        raise ConversionError(
            f"the budget of {budget_bytes:,} bytes is too small: training the biases alone needs a "
            f"{arena:,}-byte arena (measured)"
        )
    chosen: list[int] = []
    names: list[str] = []
    tried: list[tuple[str, int]] = []
    for adapted in reversed(result.metadata["adapted"]):
        candidate = dataclasses.replace(base, sparse_weights=",".join(str(i) for i in chosen + [adapted["index"]]))
        attempt = convert(model_bytes, candidate)
        attempt_arena = smallest_arena(attempt.model)
        fits = attempt_arena <= budget_bytes
        tried.append((adapted["name"], attempt_arena))
        if on_try is not None:
            on_try(adapted["name"], attempt_arena, fits)
        if fits:
            chosen.append(adapted["index"])
            names.append(adapted["name"])
            result, arena = attempt, attempt_arena
    return SparseChoice(result=result, arena_bytes=arena, weight_layers=names, tried=tried)


__all__ = ["SparseChoice", "choose_sparse"]
