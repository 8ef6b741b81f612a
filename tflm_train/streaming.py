"""Streaming models (microWakeWord keyword spotters): whole clips, in order.

A streaming model keeps its past in resource variables (ring buffers that
every Invoke() advances), so its samples are not independent: a clip is a
sequence of invocations fed in order after an empty stream. This module
holds the clip data format (docs/streaming.md), the streaming fit/evaluate
loops and the detection metrics the model's users read.

Everything here is device verbs (tflm_train.trainer): reset_stream between
clips (MicroInterpreter::Reset(), then the state tensor's bytes back, so the
adapter is kept), then per invocation one Invoke() in mode INFER (a frame
without a label) or TRAIN (a labelled frame, target = its label).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tflm_train.converter.model_ir import Model
from tflm_train.converter.ops import Mode
from tflm_train.data import DataError, _one_line
from tflm_train.errors import TflmTrainError
from tflm_train.trainer import PlainModel, TrainableModel, dequantize, quantize

# A per-invocation label meaning "no label here: run the frame in inference mode".
IGNORE = -1.0
# The keys of a clip file (docs/streaming.md).
FEATURES, LENGTHS, LABELS = "features", "lengths", "labels"
CLIP_LABELS, POSITIVE_START, POSITIVE_STOP = "clip_labels", "positive_start", "positive_stop"


class ManifestError(TflmTrainError, ValueError):
    """A microWakeWord manifest that cannot be read."""


def is_streaming(model_bytes: bytes) -> bool:
    """True for a model that writes resource variables on every invocation."""
    model = Model.from_bytes(model_bytes)
    return any(model.op_type(op) == "ASSIGN_VARIABLE" for op in model.operators)


def is_clip_file(path: str | Path) -> bool:
    """True when the .npz holds clips (a `features` array) rather than x / y samples."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return isinstance(archive, np.lib.npyio.NpzFile) and FEATURES in archive.files
    except Exception:  # noqa: BLE001 - load_clips / load_npz say what is wrong
        return False


# ---- the clip format ----------------------------------------------------------------------------
@dataclass
class Clips:
    """N clips of up to T invocations each.

    features  [N, T, *input shape]: real values (float), or the model's own
              int8 input values (int8 data on an int8 model, e.g. a device's
              ring buffer of feature frames), used as they are
    lengths   [N]: invocations that belong to each clip (the rest is padding)
    labels    [N, T] float32: target per invocation, IGNORE (-1) where none
    """

    features: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    @property
    def positive(self) -> np.ndarray:
        """Which clips hold the wake word: a label of 1 (>= 0.5) somewhere."""
        return (self.labels >= 0.5).any(axis=1)

    @property
    def labelled_invocations(self) -> int:
        return int((self.labels != IGNORE).sum())

    @property
    def invocations(self) -> int:
        return int(self.lengths.sum())

    def save(self, path: str | Path) -> None:
        np.savez(path, features=self.features, lengths=self.lengths, labels=self.labels)


def window_labels(clip_labels, lengths, steps: int, positive_start=None, positive_stop=None) -> np.ndarray:
    """Per-invocation labels from per-clip ones: a negative clip is 0 on all
    its invocations; a positive clip is 1 on [positive_start, positive_stop)
    (the invocations right after the word ends) and IGNORE elsewhere - the
    frames while the word is still being spoken, or long after, teach nothing
    reliable either way. Padding past a clip's length is IGNORE."""
    clip_labels = np.asarray(clip_labels).reshape(-1)
    lengths = np.asarray(lengths).reshape(-1)
    n = len(clip_labels)
    labels = np.full((n, steps), IGNORE, np.float32)
    for i in range(n):
        if clip_labels[i] >= 0.5:
            labels[i, int(positive_start[i]) : int(positive_stop[i])] = 1.0
        else:
            labels[i, : int(lengths[i])] = 0.0
    return labels


def load_clips(path: str | Path, sample_shape: tuple[int, ...]) -> Clips:
    """Reads and checks a clip file against the model's input shape; any
    problem is one DataError line."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - numpy raises whatever the bytes cause
        raise DataError(f"{path}: not a readable .npz file ({_one_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array; clips are an .npz (docs/streaming.md)")
    try:
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # noqa: BLE001 - a corrupt member
        raise DataError(f"{path}: not a readable .npz file ({_one_line(exc)})") from None
    if FEATURES not in arrays:
        raise DataError(f"{path}: a clip file needs a '{FEATURES}' array [clips, invocations, *input shape]")
    features = arrays[FEATURES]
    if features.dtype.kind not in "fiu":
        raise DataError(f"{path}: '{FEATURES}' must be numeric, not {features.dtype}")
    shape = tuple(sample_shape)
    if features.ndim < 2 or len(features) == 0 or features.shape[1] == 0:
        raise DataError(f"{path}: '{FEATURES}' must be [clips, invocations, *{list(shape)}] with at least one of each")
    n, steps = features.shape[:2]
    if tuple(features.shape[2:]) != shape:
        if int(np.prod(features.shape[2:])) != int(np.prod(shape)):
            raise DataError(
                f"{path}: each invocation's features are {tuple(features.shape[2:])} but the model input is {shape}"
            )
        features = features.reshape((n, steps) + shape)
    if features.dtype.kind == "f" and not np.isfinite(features).all():
        raise DataError(f"{path}: '{FEATURES}' contains NaN or infinite values")
    lengths = arrays.get(LENGTHS)
    if lengths is None:
        lengths = np.full(n, steps, np.int64)
    lengths = np.asarray(lengths).reshape(-1)
    if lengths.dtype.kind not in "iu" or len(lengths) != n:
        raise DataError(f"{path}: '{LENGTHS}' must hold one integer per clip ({n})")
    if (lengths < 1).any() or (lengths > steps).any():
        raise DataError(f"{path}: '{LENGTHS}' must lie in [1, {steps}]")
    labels = _labels(path, arrays, n, steps, lengths)
    return Clips(features, lengths.astype(np.int64), labels)


def _labels(path, arrays: dict, n: int, steps: int, lengths: np.ndarray) -> np.ndarray:
    if LABELS in arrays and CLIP_LABELS in arrays:
        raise DataError(f"{path}: give either '{LABELS}' (per invocation) or '{CLIP_LABELS}', not both")
    if LABELS in arrays:
        labels = np.asarray(arrays[LABELS])
        if labels.dtype.kind not in "fiub" or labels.shape != (n, steps):
            raise DataError(f"{path}: '{LABELS}' must be numeric [{n}, {steps}] (one per invocation)")
        labels = labels.astype(np.float32)
        valid = (labels == IGNORE) | ((labels >= 0) & (labels <= 1))
        if not valid.all():
            raise DataError(f"{path}: '{LABELS}' must be in [0, 1], or {IGNORE:g} for an invocation without a label")
        padding = np.arange(steps)[None, :] >= lengths[:, None]
        labels[padding] = IGNORE  # past a clip's end nothing runs
        return labels
    if CLIP_LABELS not in arrays:
        return np.full((n, steps), IGNORE, np.float32)  # unlabelled clips: evaluation of probabilities only
    clip_labels = np.asarray(arrays[CLIP_LABELS]).reshape(-1)
    if clip_labels.dtype.kind not in "fiub" or len(clip_labels) != n or not np.isin(clip_labels, (0, 1)).all():
        raise DataError(f"{path}: '{CLIP_LABELS}' must hold one 0 or 1 per clip ({n})")
    positive = clip_labels == 1
    start, stop = arrays.get(POSITIVE_START), arrays.get(POSITIVE_STOP)
    if positive.any():
        if start is None or stop is None:
            raise DataError(
                f"{path}: positive clips need '{POSITIVE_START}' and '{POSITIVE_STOP}' (the invocations labelled 1)"
            )
        start, stop = np.asarray(start).reshape(-1), np.asarray(stop).reshape(-1)
        if start.dtype.kind not in "iu" or stop.dtype.kind not in "iu" or len(start) != n or len(stop) != n:
            raise DataError(f"{path}: '{POSITIVE_START}' and '{POSITIVE_STOP}' must hold one integer per clip ({n})")
        bad = positive & ((start < 0) | (stop <= start) | (stop > lengths))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{path}: clip {i}: positive window [{start[i]}, {stop[i]}) is empty or outside its {lengths[i]} invocations"
            )
    return window_labels(clip_labels, lengths, steps, start, stop)


# ---- the detection rule --------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionRule:
    """microWakeWord's rule: the mean of the last `window` probabilities
    (once that many exist) above `cutoff` is a detection."""

    window: int = 1
    cutoff: float = 0.5
    source: str = "default"  # where the values came from: a manifest path, "options" or "default"

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ManifestError("the sliding window must hold at least one probability")
        if not 0.0 <= self.cutoff < 1.0:
            raise ManifestError("the probability cutoff must lie in [0, 1)")

    def detects(self, probabilities: np.ndarray) -> bool:
        return self.first_detection(probabilities) >= 0

    def first_detection(self, probabilities: np.ndarray) -> int:
        """The first invocation whose window mean exceeds the cutoff, or -1."""
        p = np.asarray(probabilities, np.float64)
        if len(p) < self.window:
            return -1
        sums = np.convolve(p, np.ones(self.window), mode="valid")  # sums[i]: invocations i .. i+window-1
        hits = np.flatnonzero(sums / self.window > self.cutoff)
        return int(hits[0]) + self.window - 1 if hits.size else -1

    def to_json(self) -> dict:
        return {"window": self.window, "cutoff": self.cutoff, "source": self.source}


def read_manifest(path: str | Path) -> DetectionRule:
    """The rule from a microWakeWord JSON manifest ("micro": probability_cutoff,
    sliding_window_size), as pymicro-wakeword ships next to each .tflite."""
    try:
        manifest = json.loads(Path(path).read_text())
        micro = manifest["micro"]
        return DetectionRule(int(micro["sliding_window_size"]), float(micro["probability_cutoff"]), str(path))
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(
            f"{path}: not a microWakeWord manifest (needs micro.probability_cutoff and micro.sliding_window_size: "
            f"{_one_line(exc)})"
        ) from None


def detection_rule(manifest: str | None = None, window: int | None = None, cutoff: float | None = None) -> DetectionRule:
    """A manifest's rule, with explicit window / cutoff overriding it."""
    rule = read_manifest(manifest) if manifest else DetectionRule()
    if window is None and cutoff is None:
        return rule
    return DetectionRule(
        rule.window if window is None else int(window), rule.cutoff if cutoff is None else float(cutoff),
        f"{rule.source} + options" if manifest else "options",
    )


# ---- running clips ---------------------------------------------------------------------------------
class ClipRunner:
    """Feeds clips to a streaming model invocation by invocation.

    The per-invocation work is a few tensor writes and one Invoke(): the
    features are quantized once for the whole file, and the mode, target and
    learning rate are plain array writes (the loss op may rewrite the mode
    to SKIP, so it is written on every invocation)."""

    def __init__(self, model: PlainModel):
        self.model = model
        self.interpreter = model.interpreter
        self.trainable = isinstance(model, TrainableModel)
        self._output = model.output_details
        # A converted model whose output is logits (no final LOGISTIC): probabilities are their sigmoid.
        self._logits = self.trainable and model.info.raw.get("output_kind") == "logits"
        if self.trainable:
            self._mode = np.zeros(1, np.int32)
            self._target = np.zeros(model._target_details["shape"], np.float32)
            self._lr = np.zeros(1, np.float32)
            if model.info.loss != "bce" or int(np.prod(model.output_shape)) != 1:
                raise DataError(
                    "clip training needs a model with one binary output (loss bce): this one has loss "
                    f"{model.info.loss} and {int(np.prod(model.output_shape))} outputs"
                )

    def quantized(self, clips: Clips) -> np.ndarray:
        """The features as the model's input tensor holds them."""
        details = self.model.input_details
        dtype = np.dtype(details["dtype"])
        if clips.features.dtype == dtype and dtype != np.float32:
            return clips.features  # already the model's own integer input values
        if clips.features.dtype.kind in "iu" and dtype != np.float32:
            raise DataError(
                f"integer features must be the model's own input type ({dtype.name}), not {clips.features.dtype}; "
                "give real values as float32"
            )
        return quantize(clips.features.astype(np.float32), details)

    def reset(self) -> None:
        """A new clip: empty stream buffers, the adapter kept."""
        if self.trainable:
            self.model.reset_stream()
        else:
            self.interpreter.reset()

    def _probability(self) -> float:
        value = float(dequantize(self.interpreter.get_output(0), self._output).reshape(-1)[0])
        return float(1.0 / (1.0 + np.exp(-value))) if self._logits else value

    def run_clip(self, frames: np.ndarray, labels: np.ndarray | None, length: int,
                 learning_rate: float = 0.0) -> tuple[np.ndarray, list[float]]:
        """One clip from an empty stream: probabilities per invocation, and the
        losses of the trained invocations (labels None: inference only)."""
        self.reset()
        interpreter = self.interpreter
        probabilities = np.empty(length, np.float64)
        losses = []
        train = labels is not None and self.trainable
        if self.trainable:
            model = self.model
            self._lr[0] = learning_rate
            interpreter.set_input(model._learning_rate, self._lr)
        for t in range(length):
            interpreter.set_input(0, frames[t][None])
            if self.trainable:
                label = labels[t] if train else IGNORE
                if label == IGNORE:
                    self._mode[0] = int(Mode.INFER)
                else:
                    self._mode[0] = int(Mode.TRAIN)
                    self._target.fill(label)
                    interpreter.set_input(model._target, self._target)
                interpreter.set_input(model._mode, self._mode)
                interpreter.invoke()
                if label != IGNORE:
                    losses.append(float(interpreter.get_output(model._loss)[0]))
            else:
                interpreter.invoke()
            probabilities[t] = self._probability()
        return probabilities, losses


# ---- metrics ------------------------------------------------------------------------------------------
@dataclass
class Detections:
    """What the detection rule makes of a set of clips."""

    positives: int = 0
    detected: int = 0  # positive clips with a detection
    negatives: int = 0
    false_accepts: int = 0  # negative clips with a detection
    per_clip: list[bool] = field(default_factory=list)  # detection per clip, in file order
    peak: list[float] = field(default_factory=list)  # highest window mean per clip

    @property
    def detection_rate(self) -> float | None:
        return self.detected / self.positives if self.positives else None

    @property
    def false_accept_rate(self) -> float | None:
        return self.false_accepts / self.negatives if self.negatives else None

    def to_json(self) -> dict:
        return {
            "positives": self.positives, "detected": self.detected, "detection_rate": self.detection_rate,
            "negatives": self.negatives, "false_accepts": self.false_accepts,
            "false_accept_rate": self.false_accept_rate, "per_clip": self.per_clip,
            "peak_window_mean": [round(v, 6) for v in self.peak],
        }

    def line(self) -> str:
        parts = []
        if self.positives:
            parts.append(f"{self.detected}/{self.positives} positive clips detected ({100 * self.detection_rate:.1f}%)")
        if self.negatives:
            parts.append(
                f"{self.false_accepts}/{self.negatives} negative clips falsely accepted "
                f"({100 * self.false_accept_rate:.1f}%)"
            )
        return ", ".join(parts) or "no clips"


def peak_window_mean(probabilities: np.ndarray, window: int) -> float:
    p = np.asarray(probabilities, np.float64)
    if len(p) < window:
        return 0.0
    return float((np.convolve(p, np.ones(window), mode="valid") / window).max())


def detections(runner: ClipRunner, clips: Clips, rule: DetectionRule, quantized: np.ndarray | None = None) -> Detections:
    """Runs every clip in inference mode and applies the detection rule."""
    quantized = runner.quantized(clips) if quantized is None else quantized
    result = Detections()
    for i, positive in enumerate(clips.positive):
        probabilities, _ = runner.run_clip(quantized[i], None, int(clips.lengths[i]))
        hit = rule.detects(probabilities)
        result.per_clip.append(bool(hit))
        result.peak.append(peak_window_mean(probabilities, rule.window))
        if positive:
            result.positives += 1
            result.detected += int(hit)
        else:
            result.negatives += 1
            result.false_accepts += int(hit)
    return result


def clip_probabilities(runner: ClipRunner, clips: Clips) -> list[np.ndarray]:
    """Each clip's probabilities per invocation (inference mode)."""
    quantized = runner.quantized(clips)
    return [runner.run_clip(quantized[i], None, int(clips.lengths[i]))[0] for i in range(len(clips))]


# ---- fit --------------------------------------------------------------------------------------------
@dataclass
class StreamingFitResult:
    rule: DetectionRule
    losses: list[float] = field(default_factory=list)  # one per trained invocation
    epoch_losses: list[float] = field(default_factory=list)
    clips: int = 0
    invocations: int = 0  # run per epoch (trained and inference)
    trained_invocations: int = 0  # labelled ones per epoch
    before: Detections | None = None
    after: Detections | None = None
    held_out: dict[str, tuple[Detections, Detections]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.losses)


def fit(
    model: TrainableModel,
    clips: Clips,
    epochs: int,
    learning_rate: float,
    rule: DetectionRule,
    seed: int = 0,
    held_out: dict[str, Clips] | None = None,
    on_clip: Callable[[int, float], None] | None = None,
) -> StreamingFitResult:
    """Trains clip by clip in a shuffled clip order per epoch; within a clip
    every invocation runs in order, the labelled ones in training mode.
    Detections before and after on the training clips and each held-out set."""
    runner = ClipRunner(model)
    quantized = runner.quantized(clips)
    held_out = held_out or {}
    held_quantized = {name: runner.quantized(data) for name, data in held_out.items()}
    result = StreamingFitResult(rule, clips=len(clips), invocations=clips.invocations,
                                trained_invocations=clips.labelled_invocations)
    result.before = detections(runner, clips, rule, quantized)
    before = {name: detections(runner, data, rule, held_quantized[name]) for name, data in held_out.items()}
    rng = np.random.default_rng(seed)
    done = 0
    for _ in range(epochs):
        epoch = []
        for i in rng.permutation(len(clips)):
            _, losses = runner.run_clip(quantized[i], clips.labels[i], int(clips.lengths[i]), learning_rate)
            epoch.extend(losses)
            done += 1
            if on_clip is not None:
                finite = [v for v in losses if np.isfinite(v)]
                on_clip(done, float(np.mean(finite)) if finite else float("nan"))
        result.losses.extend(epoch)
        trained = [v for v in epoch if np.isfinite(v)]
        result.epoch_losses.append(float(np.mean(trained)) if trained else float("nan"))
    result.after = detections(runner, clips, rule, quantized)
    result.held_out = {
        name: (before[name], detections(runner, data, rule, held_quantized[name])) for name, data in held_out.items()
    }
    return result


__all__ = [
    "IGNORE", "ClipRunner", "Clips", "DetectionRule", "Detections", "StreamingFitResult", "clip_probabilities",
    "detection_rule", "detections", "fit", "is_clip_file", "is_streaming", "load_clips", "read_manifest",
    "window_labels",
]


# ---- the command line's work (tflm_train/cli.py renders it) -------------------------------------
def _check_rate(epochs: int, lr: float) -> None:
    from tflm_train.errors import UserError

    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    if not (lr >= 0):
        raise UserError("--lr must be >= 0")


def run_fit_clips(model_bytes: bytes, data_path: str, eval_paths, epochs: int, lr: float, state_in: bytes | None,
                  seed: int, rule: DetectionRule, on_start=None, on_clip=None) -> tuple[StreamingFitResult, dict, bytes]:
    """`tflm-train fit` on a clip file: (result, JSON payload, trained state)."""
    from tflm_train.memory import smallest_arena
    from tflm_train.runtime import check_integrity

    _check_rate(epochs, lr)
    check_integrity(model_bytes, guard="all")
    model = TrainableModel(model_bytes)
    if state_in is not None:
        model.load_state(state_in)
    clips = load_clips(data_path, model.sample_shape)
    if clips.labelled_invocations == 0:
        raise DataError(f"{data_path}: no labelled invocation to train on (labels all {IGNORE:g}, or no labels)")
    held_out = {path: load_clips(path, model.sample_shape) for path in eval_paths}
    if on_start is not None:
        on_start(epochs * len(clips))
    result = fit(model, clips, epochs, lr, rule, seed, held_out=held_out, on_clip=on_clip)
    header = model.state_header()
    payload = {
        "streaming": True,
        "clips": result.clips,
        "invocations_per_epoch": result.invocations,
        "trained_invocations_per_epoch": result.trained_invocations,
        "epochs": epochs,
        "steps": result.steps,
        "loss_first": result.epoch_losses[0],
        "loss_last": result.epoch_losses[-1],
        "detection_rule": rule.to_json(),
        "before": result.before.to_json(),
        "after": result.after.to_json(),
        "optimizer_steps": header.step,
        "skipped_updates": header.skipped,
        "skipped_samples": header.skipped_samples,
        "arena_bytes": smallest_arena(model_bytes),
        "state_bytes": model.info.state_bytes,
    }
    if result.held_out:
        payload["eval"] = [
            {"data": path, "before": before.to_json(), "after": after.to_json()}
            for path, (before, after) in result.held_out.items()
        ]
    return result, payload, model.save_state()


def run_evaluate_clips(model_bytes: bytes, data_path: str, state: bytes | None, rule: DetectionRule) -> dict:
    """`tflm-train evaluate` on a clip file: detections of any model (original,
    converted with an optional state, merged)."""
    from tflm_train.converter.training_info import training_info
    from tflm_train.errors import UserError
    from tflm_train.runtime import check_integrity

    check_integrity(model_bytes, guard="all")
    if training_info(Model.from_bytes(model_bytes)) is not None:
        model = TrainableModel(model_bytes)
        if state is not None:
            model.load_state(state)
    else:
        if state is not None:
            raise UserError("--state applies to converted models only")
        model = PlainModel(model_bytes)
    clips = load_clips(data_path, model.sample_shape)
    found = detections(ClipRunner(model), clips, rule)
    return {"streaming": True, "clips": len(clips), "invocations": clips.invocations,
            "detection_rule": rule.to_json(), **found.to_json()}
