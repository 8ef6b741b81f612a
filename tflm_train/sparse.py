"""Chooses a sparse update that fits a memory budget, by measured contribution.

The unit of choice is a *part*: one layer's bias, its full weights, or the
weights of a fraction (1/2, 1/4) of its output channels.
The last layer's bias is always trained (the cheapest useful update: its
gradient is the loss gradient itself); if even that does not fit, the budget
is refused. Every other part is measured twice, each time together with that
base:

  cost   the converted model's smallest training arena, measured in the TFLM
         interpreter (tflm_train/memory.py), minus the base's (a part that
         does not allocate within the budget on its own: one probe says so)
  gain   a short trial fine-tune on the user's representative data: the
         held-out loss before minus after `trial_steps` SGD steps on the
         training share (the data is split in two, deterministically)

Parts are then added greedily by gain per byte (parts with no measured gain
are left out); after each addition the combination's arena is measured again
(arenas are not additive: a deeper part also keeps more activations for the
backward pass) and the part is kept only if it fits. A layer's weight parts
exclude each other: a later one replaces the one kept only when it gains
more and the whole still fits. This is the contribution analysis of Lin et
al., "On-Device Training Under 256KB Memory" (NeurIPS 2022), with per-part
trial fine-tunes instead of their offline full fine-tunes.

Which channels of a layer: those whose filter rows moved most (L2 norm of the
change per output channel) in a trial fine-tune of that layer's full weights,
i.e. the largest gradients per output channel summed over the trial's steps,
measured on the user's data. Those channels train as delta rows on top of
the frozen filter (tflm_ops/reference/channel_rows.h), so the parameters,
their gradients and the optimizer's buffers are sized to the chosen channels.
Without data, the first channels are taken.

Without representative data, parts are ranked from the output back (the
order in which their gradients are cheapest to reach), which is what the
result then says.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tflm_train.converter import ConversionError, ConvertConfig, ConvertResult, convert
from tflm_train.converter.methods.sparse import format_channels
from tflm_train.memory import smallest_arena, smallest_arena_within


@dataclass
class Part:
    """One trainable unit: a layer's bias, its full weights or some of its channels."""

    index: int  # operator index of the layer
    name: str
    kind: str  # "bias" | "weights" | "channels"
    channels: list[int] = field(default_factory=list)  # kind "channels": the output channels
    out_channels: int = 0  # the layer's output channels (weights parts)
    params: int = 0
    arena_bytes: int | None = None  # measured, with the base (None: over the budget)
    cost_bytes: int = 0  # arena_bytes - the base's arena (at least 1)
    gain: float | None = None  # held-out loss decrease of its trial (None: no data)
    chosen: bool = False
    note: str = ""  # why it was left out

    @property
    def label(self) -> str:
        if self.kind == "channels":
            return f"weights of {len(self.channels)}/{self.out_channels} channels of {self.name}"
        return f"{self.kind} of {self.name}"

    def as_dict(self) -> dict:
        return {"layer": self.name, "index": self.index, "part": self.kind, "params": self.params,
                "channels": self.channels, "out_channels": self.out_channels,
                "arena_bytes": self.arena_bytes, "cost_bytes": self.cost_bytes, "gain": self.gain,
                "gain_per_kb": None if self.gain is None else 1024 * self.gain / self.cost_bytes,
                "chosen": self.chosen, "note": self.note}


@dataclass
class SparseChoice:
    result: ConvertResult
    arena_bytes: int
    weight_layers: list[str]  # names of the layers whose full weights train
    bias_layers: list[str]  # names of the layers whose bias trains
    channel_layers: dict[str, list[int]] = field(default_factory=dict)  # layer -> its channels that train
    parts: list[Part] = field(default_factory=list)  # every part measured, in the order considered
    ranking: str = "contribution"  # or "output-first" (no representative data)
    base_arena_bytes: int = 0  # the last layer's bias alone
    loss_before: float | None = None  # held-out loss of the untrained model
    loss_after: float | None = None  # ... after a trial fine-tune of the choice
    accuracy_before: float | None = None
    accuracy_after: float | None = None

    @property
    def tried(self) -> list[tuple[str, int]]:
        return [(p.label, p.arena_bytes) for p in self.parts]

    def as_dict(self) -> dict:
        return {"ranking": self.ranking, "base_arena_bytes": self.base_arena_bytes, "arena_bytes": self.arena_bytes,
                "bias_layers": self.bias_layers, "weight_layers": self.weight_layers,
                "channel_layers": self.channel_layers,
                "loss_before": self.loss_before, "loss_after": self.loss_after,
                "accuracy_before": self.accuracy_before, "accuracy_after": self.accuracy_after,
                "parts": [p.as_dict() for p in self.parts]}


# Fractions of a layer's output channels offered besides its whole weights.
CHANNEL_FRACTIONS = (0.5, 0.25)


def _config(base: ConvertConfig, biases: list[int], weights: list[int],
            channels: dict[int, list[int]] | None = None) -> ConvertConfig:
    channels = channels or {}
    targets = sorted(set(biases) | set(weights) | set(channels))
    return dataclasses.replace(
        base, method="sparse", targets=",".join(map(str, targets)),
        sparse_biases=",".join(map(str, sorted(biases))),
        sparse_weights=",".join(map(str, sorted(weights))),
        sparse_channels=format_channels(channels),
    )


def _weight_choice(parts: list[Part]) -> tuple[list[int], dict[int, list[int]]]:
    """(layers whose full weights train, layer -> channels) of the weight parts given."""
    weights = [p.index for p in parts if p.kind == "weights"]
    return weights, {p.index: p.channels for p in parts if p.kind == "channels"}


@dataclass
class _Trial:
    """Short fine-tunes of converted models on one split of the user's data."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray
    steps: int
    learning_rate: float

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, steps: int, learning_rate: float) -> "_Trial":
        if len(x) < 2:
            raise ConversionError("representative data for --budget-bytes needs at least 2 samples")
        order = np.random.default_rng(0).permutation(len(x))
        held = max(1, len(x) // 3)
        return cls(x[order[held:]], y[order[held:]], x[order[:held]], y[order[:held]], steps, learning_rate)

    def _measure(self, model) -> tuple[float, float | None]:
        losses = [model.evaluate_loss(xi, yi) for xi, yi in zip(self.x_held, self.y_held)]
        accuracy = None
        if np.issubdtype(np.asarray(self.y_held).dtype, np.integer):
            hits = [int(np.argmax(model.predict(xi))) == int(yi) for xi, yi in zip(self.x_held, self.y_held)]
            accuracy = float(np.mean(hits))
        return float(np.mean(losses)), accuracy

    def run(self, model_bytes: bytes, with_accuracy: bool = False) -> tuple[float, float, float | None, float | None]:
        """(loss before, loss after, accuracy before, accuracy after) on the held-out share."""
        from tflm_train.trainer import TrainableModel

        model = TrainableModel(model_bytes)
        before = self._measure(model) if with_accuracy else (self._loss(model), None)
        for step in range(self.steps):
            i = step % len(self.x_train)
            model.train_step(self.x_train[i], self.y_train[i], self.learning_rate)
        after = self._measure(model) if with_accuracy else (self._loss(model), None)
        return before[0], after[0], before[1], after[1]

    def _loss(self, model) -> float:
        return float(np.mean([model.evaluate_loss(xi, yi) for xi, yi in zip(self.x_held, self.y_held)]))

    def channel_movement(self, result: ConvertResult, layer: str, depthwise: bool) -> np.ndarray:
        """Per output channel of `layer` (whose full weights train in `result`):
        how far its filter row moved in the trial (L2 norm of the change), the
        trial's per-channel gradient magnitude summed over its steps. Read
        from the exported state, as a device would."""
        from tflm_train.converter.state_format import Header, parameters
        from tflm_train.trainer import TrainableModel

        model = TrainableModel(result.model)
        blob = model.save_state()
        before = parameters(blob, Header.unpack(blob))
        for step in range(self.steps):
            i = step % len(self.x_train)
            model.train_step(self.x_train[i], self.y_train[i], self.learning_rate)
        blob = model.save_state()
        moved = parameters(blob, Header.unpack(blob)) - before
        tensor = next(t for t in result.metadata["state"]["tensors"] if t["layer"] == layer and t["role"] == "weight")
        values = moved[tensor["offset"]: tensor["offset"] + int(np.prod(tensor["shape"]))].reshape(tensor["shape"])
        axis = 3 if depthwise else 0  # depthwise filters are [1, kh, kw, out]
        by_channel = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        return np.sqrt((by_channel.astype(np.float64) ** 2).sum(axis=1))


def choose_sparse(
    model_bytes: bytes,
    config: ConvertConfig,
    budget_bytes: int,
    on_try: Callable[[str], None] | None = None,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    trial_steps: int = 64,
    learning_rate: float = 0.01,
) -> SparseChoice:
    """The parts to train within `budget_bytes` of measured training arena.

    data: the user's representative samples (x, y); without it, parts are
    ranked from the output back. on_try gets one line per measurement.
    """
    say = on_try or (lambda line: None)
    layers = convert(model_bytes, dataclasses.replace(config, method="sparse", sparse_weights="", sparse_biases=""))
    adapted = layers.metadata["adapted"]  # every target layer, in graph order
    if not adapted:
        raise ConversionError("sparse: no target layers")
    names = {a["index"]: a["name"] for a in adapted}
    last = adapted[-1]["index"]

    base_result = convert(model_bytes, _config(config, [last], []))
    base_arena = smallest_arena(base_result.model)
    say(f"base: bias of {names[last]}: training arena {base_arena:,} B (measured)")
    if base_arena > budget_bytes:
        raise ConversionError(
            f"the budget of {budget_bytes:,} bytes is too small: training only the last layer's bias "
            f"({names[last]}) needs a {base_arena:,}-byte arena (measured)"
        )
    trial = _Trial.of(np.asarray(data[0]), np.asarray(data[1]), trial_steps, learning_rate) if data is not None else None
    base_gain = None
    if trial is not None:
        before, after, _, _ = trial.run(base_result.model)
        base_gain = before - after
        say(f"  trial: held-out loss {before:.4f} -> {after:.4f} after {trial_steps} steps")

    # Measure every other part together with the base, from the output back.
    # Once every part of a layer is over budget on its own, deeper layers are
    # not measured: their backward pass crosses that layer and keeps more
    # activations alive, so on the models measured so far they cost more still.
    parts: list[Part] = []
    # Arenas measured so far, by (biases, weights, channels) configuration:
    # the greedy pass meets some single-part combinations again.
    measured: dict[tuple[str, str, str], tuple[ConvertResult, int]] = {}

    def key(c: ConvertConfig) -> tuple[str, str, str]:
        return c.sparse_biases, c.sparse_weights, c.sparse_channels

    def measure(part: Part) -> None:
        biases = [last] + ([part.index] if part.kind == "bias" else [])
        weights, channels = _weight_choice([part])
        part_config = _config(config, biases, weights, channels)
        try:
            result = convert(model_bytes, part_config)
        except ConversionError as exc:
            part.note = f"not convertible ({exc})"
            parts.append(part)
            return
        part.params = int(result.metadata["state"]["param_count"]) - base_params
        # The base's arena plus the part's parameters: where
        # the search starts (the answer is measured either way).
        arena = smallest_arena_within(result.model, budget_bytes, guess=base_arena + 4 * part.params)
        if arena is None:
            part.note = "over budget on its own"
            say(f"{part.label}: training arena over the budget on its own (measured: it does not allocate "
                f"in {budget_bytes:,} B)")
            parts.append(part)
            return
        measured[key(part_config)] = result, arena
        part.arena_bytes = arena
        part.cost_bytes = max(1, part.arena_bytes - base_arena)
        line = f"{part.label}: training arena {part.arena_bytes:,} B (+{part.arena_bytes - base_arena:,})"
        if trial is not None:
            before, after, _, _ = trial.run(result.model)
            part.gain = (before - after) - base_gain  # beyond what the base alone gains
            say(line + f", held-out loss gain {part.gain:+.4f} beyond the base")
        else:
            say(line)
        parts.append(part)

    base_params = int(base_result.metadata["state"]["param_count"])
    previous_layer: list[Part] = []
    for a in reversed(adapted):
        if previous_layer and all(p.note == "over budget on its own" for p in previous_layer):
            say(f"deeper than {previous_layer[-1].name}: not measured (every part of that layer is over budget)")
            break
        layer_parts = []
        if a["index"] != last:
            layer_parts.append(Part(a["index"], a["name"], "bias"))
            measure(layer_parts[-1])
        whole = Part(a["index"], a["name"], "weights")
        measure(whole)
        layer_parts.append(whole)
        out_channels = _out_channels(model_bytes, config, a["index"])
        whole.out_channels = out_channels
        order = list(range(out_channels))
        if trial is not None and not whole.note.startswith("not convertible"):
            # Channels by contribution: the trial of the whole weights (run
            # here even when they are over budget: it is only measured).
            probe = convert(model_bytes, _config(config, [last], [a["index"]]))
            movement = trial.channel_movement(probe, a["name"], a["op"] == "DEPTHWISE_CONV_2D")
            order = [int(c) for c in np.argsort(-movement, kind="stable")]
        for fraction in CHANNEL_FRACTIONS:
            count = max(1, int(round(out_channels * fraction)))
            if count >= out_channels or any(p.kind == "channels" and len(p.channels) == count for p in layer_parts):
                continue
            part = Part(a["index"], a["name"], "channels", channels=sorted(order[:count]), out_channels=out_channels)
            measure(part)
            layer_parts.append(part)
        previous_layer = layer_parts

    candidates = [p for p in parts if not p.note]
    if trial is not None:
        for p in candidates:
            if p.gain is not None and p.gain <= 0:
                p.note = "no measured gain"
        candidates = [p for p in candidates if not p.note]
        candidates.sort(key=lambda p: p.gain / p.cost_bytes, reverse=True)
    # Without data the order stays from the output back (parts were listed so).

    biases, kept = [last], []  # kept: the weight parts chosen so far
    result, arena = base_result, base_arena
    for part in candidates:
        trial_biases, trial_kept = biases, kept
        if part.kind == "bias":
            trial_biases = biases + [part.index]
        else:
            same_layer = [p for p in kept if p.index == part.index]
            if same_layer and (part.gain is None or same_layer[0].gain is None or part.gain <= same_layer[0].gain):
                part.note = f"left out: {same_layer[0].label} already trains that layer's weights"
                say(f"+ {part.label}: left out ({same_layer[0].label} is kept, with more gain per byte)")
                continue
            trial_kept = [p for p in kept if p.index != part.index] + [part]
        weights, channels = _weight_choice(trial_kept)
        attempt_config = _config(config, trial_biases, weights, channels)
        if key(attempt_config) in measured:
            attempt, attempt_arena = measured[key(attempt_config)]
        else:
            attempt = convert(model_bytes, attempt_config)
            attempt_arena = smallest_arena_within(attempt.model, budget_bytes, guess=arena + part.cost_bytes)
        if attempt_arena is not None:
            for replaced in kept:
                if replaced not in trial_kept:
                    replaced.chosen = False
                    replaced.note = f"replaced by {part.label} (more gain)"
            biases, kept, result, arena = trial_biases, trial_kept, attempt, attempt_arena
            part.chosen = True
            say(f"+ {part.label}: training arena {attempt_arena:,} B, kept")
        else:
            part.note = "left out: over the budget with the parts kept so far"
            say(f"+ {part.label}: over the budget with the parts kept so far (measured), left out")

    weights, channels = _weight_choice(kept)
    choice = SparseChoice(
        result=result, arena_bytes=arena,
        weight_layers=[names[i] for i in sorted(weights)], bias_layers=[names[i] for i in sorted(biases)],
        channel_layers={names[i]: c for i, c in sorted(channels.items())},
        parts=parts, ranking="contribution" if trial is not None else "output-first", base_arena_bytes=base_arena,
    )
    if trial is not None:
        choice.loss_before, choice.loss_after, choice.accuracy_before, choice.accuracy_after = trial.run(
            result.model, with_accuracy=True)
    return choice


def _out_channels(model_bytes: bytes, config: ConvertConfig, index: int) -> int:
    from tflm_train.converter.layers import linear_target
    from tflm_train.converter.model_ir import Model

    return int(linear_target(Model.from_bytes(model_bytes), index).units)


__all__ = ["Part", "SparseChoice", "choose_sparse"]
