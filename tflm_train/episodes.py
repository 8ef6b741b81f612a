"""Episodic training with acceptance and rollback: how a device trains for
months without a bad run ruining the adapter it has.

An episode trains the current adapter on a batch of new data, then checks it
on a small held-out buffer:

  committed = save_state()                     # the adapter in flash
  before = held-out mean loss                  # of the committed adapter
  for each sample: train_step; monitor.observe(...)
      divergence (loss far above its running mean, a non-finite update or loss)
      -> stop, restore `committed`, count a rollback
  after = held-out mean loss
  output saturated in every step -> restore, count a rollback
  after > before + tolerance     -> restore, count a rejected episode
  otherwise                      -> accept: the new state is the committed one

The monitor (EpisodeMonitor) is a line-for-line twin of tflmt::EpisodeMonitor
(tflm_ops/device/episode.h), and `restore` of tflmt::Trainer::Restore: the
counters (skipped updates and samples, rejected episodes, rollbacks) live in
the state's header and are carried over into the restored adapter, so they
count over the device's life. A device stores the state with
tflmt::AdapterStore (power-fail safe) after every episode: the accepted one,
or the committed one again with its counters raised, so that a rejection or
rollback survives a reboot (docs/device_api.md); on the host it is a state
file.
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass, field
from enum import Enum

import numpy as np

from tflm_train.converter.state_format import (
    HEADER_BYTES,
    REJECTED_EPISODES_OFFSET,
    ROLLBACKS_OFFSET,
    SKIPPED_SAMPLES_OFFSET,
    SKIPPED_UPDATES_OFFSET,
    Header,
    seal,
)


class Verdict(Enum):
    """Same values as tflmt::EpisodeVerdict."""

    CONTINUE = 0
    ACCEPT = 1
    REJECT = 2  # held-out check worse than the committed adapter
    LOSS_DIVERGED = 3  # recent loss far above its running mean
    NOT_FINITE = 4  # a non-finite loss for a finite sample, or a dropped non-finite update
    SATURATED = 5  # the output sat at the ends of its range in every step

    @property
    def rolled_back(self) -> bool:
        return self in (Verdict.LOSS_DIVERGED, Verdict.NOT_FINITE, Verdict.SATURATED)


@dataclass
class EpisodeLimits:
    """Same fields and defaults as tflmt::EpisodeLimits."""

    divergence_ratio: float = 4.0  # recent loss above ratio x running mean: diverged
    warmup_steps: int = 4  # losses seen before the loss check starts
    patience: int = 4  # consecutive steps above the ratio before it counts (one bad sample is not divergence)
    recent_decay: float = 0.9  # EMA of the last few losses (per-sample losses are noisy)
    mean_decay: float = 0.95  # EMA over the episode so far, from the committed held-out loss
    tolerance: float = 0.0  # held-out loss may exceed the committed one by this much


class EpisodeMonitor:
    """Watches the losses of one episode (tflmt::EpisodeMonitor's twin).

    float32 arithmetic, in the same order as the C++, so the same losses give
    the same verdicts on the device."""

    def __init__(self, limits: EpisodeLimits | None = None):
        self.limits = limits or EpisodeLimits()
        self.begin(0, float("nan"))

    def begin(self, skipped_updates: int, baseline_loss: float) -> None:
        """`baseline_loss`: the committed adapter's held-out mean loss, where
        the running mean starts (NaN: it starts at the first loss)."""
        self.steps = 0
        self.mean = self.recent = np.float32(baseline_loss)
        self.has_baseline = math.isfinite(baseline_loss) and baseline_loss > 0
        self.skipped_updates_at_start = skipped_updates
        self.over = 0  # consecutive steps with the recent loss above ratio x mean
        self.all_saturated = True

    def observe(self, loss: float, sample_finite: bool, skipped_updates: int, output_saturated: bool) -> Verdict:
        f32 = np.float32
        if not sample_finite:
            return Verdict.CONTINUE  # a bad sample: skipped and counted, not a divergence
        if skipped_updates != self.skipped_updates_at_start:
            return Verdict.NOT_FINITE  # the optimizer dropped an update that would have been non-finite
        loss = f32(loss)
        if not math.isfinite(loss):
            return Verdict.NOT_FINITE
        self.all_saturated = self.all_saturated and output_saturated
        if self.steps == 0 and not self.has_baseline:
            self.mean = self.recent = loss
        recent_decay, mean_decay = f32(self.limits.recent_decay), f32(self.limits.mean_decay)
        self.recent = f32(recent_decay * self.recent + f32(f32(1) - recent_decay) * loss)
        self.steps += 1
        if self.steps > self.limits.warmup_steps and self.recent > f32(self.limits.divergence_ratio) * self.mean:
            self.over += 1  # the running mean does not follow a rising loss up
            return Verdict.LOSS_DIVERGED if self.over >= self.limits.patience else Verdict.CONTINUE
        self.over = 0
        self.mean = f32(mean_decay * self.mean + f32(f32(1) - mean_decay) * loss)
        return Verdict.CONTINUE

    def finish(self, committed_loss: float, new_loss: float) -> Verdict:
        f32 = np.float32
        if self.steps > 0 and self.all_saturated:
            return Verdict.SATURATED
        if not (f32(new_loss) <= f32(committed_loss) + f32(self.limits.tolerance)):  # NaN: reject
            return Verdict.REJECT
        return Verdict.ACCEPT


def output_saturated(values: np.ndarray, dtype, probabilities: bool) -> bool:
    """Every value at an end of its range: int8/int16 at the type's min or
    max; a float probability output at 0 or 1 (tflmt::Trainer::OutputSaturated)."""
    values = np.asarray(values)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return bool(np.all((values == info.min) | (values == info.max)))
    if probabilities:
        v = values.astype(np.float32)
        return bool(np.all((v <= 1e-6) | (v >= 1 - 1e-6)))
    return False


def carry_counters(committed: bytes, live: bytes | None, verdict: Verdict) -> bytes:
    """The committed state with the live state's counters carried over and
    the one for `verdict` incremented, resealed (tflmt::Trainer::Restore)."""
    blob = bytearray(committed)
    for offset in (SKIPPED_UPDATES_OFFSET, SKIPPED_SAMPLES_OFFSET, REJECTED_EPISODES_OFFSET, ROLLBACKS_OFFSET):
        value = struct.unpack_from("<I", live or committed, offset)[0]
        struct.pack_into("<I", blob, offset, value)
    counter = REJECTED_EPISODES_OFFSET if verdict is Verdict.REJECT else ROLLBACKS_OFFSET
    struct.pack_into("<I", blob, counter, struct.unpack_from("<I", blob, counter)[0] + 1)
    return bytes(seal(blob))


@dataclass
class EpisodeResult:
    verdict: Verdict
    steps: int  # training steps run (fewer than the samples when stopped)
    heldout_before: float  # held-out mean loss of the committed adapter
    heldout_after: float  # of the episode's adapter (NaN when stopped early)
    metric_before: float | None = None  # held-out accuracy / mse, for people
    metric_after: float | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT

    def to_json(self) -> dict:
        out = asdict(self)
        out["verdict"] = self.verdict.name.lower()
        out["accepted"] = self.accepted
        del out["losses"]
        return out


def heldout_loss(model, x: np.ndarray, y: np.ndarray) -> float:
    """Mean loss over the held-out buffer (mode EVALUATE: nothing changes)."""
    total = np.float32(0)
    for i in range(len(x)):  # float32, in order: the device's sum, bit for bit
        total = np.float32(total + np.float32(model.evaluate_loss(x[i], y[i])))
    return float(np.float32(total / np.float32(len(x)))) if len(x) else float("nan")


def run_episode(
    model,
    x: np.ndarray,
    y: np.ndarray,
    heldout: tuple[np.ndarray, np.ndarray],
    learning_rate: float,
    limits: EpisodeLimits | None = None,
    metric=None,
    distill_weight: float | None = None,
) -> EpisodeResult:
    """Trains one episode on (x, y) and commits or restores (see the module
    docstring). `model` is a TrainableModel holding the committed adapter;
    afterwards it holds the accepted one, or the committed one again.
    `metric(model)` (optional) adds a human metric to the result.
    distill_weight: a `convert --distill` model learns without forgetting:
    before the episode, the committed adapter's outputs on the episode's
    samples are recorded as the teacher (tflmt::Trainer::RecordTeacher on a
    device), and each step pulls toward them with this weight. The held-out
    check stays plain cross-entropy."""
    from tflm_train.trainer import all_finite

    monitor = EpisodeMonitor(limits)
    if distill_weight is not None:
        from tflm_train import distill

        if not distill.is_distill_model(model):
            raise ValueError("distill_weight needs a model converted with --distill")
        y = distill.soft_targets(y, distill.record_teacher(model, x), distill_weight)
    committed = model.save_state()
    before = heldout_loss(model, *heldout)
    metric_before = metric(model) if metric else None
    monitor.begin(model.state_header().skipped, before)
    probabilities = model.info.raw.get("output_kind") == "probabilities"
    losses: list[float] = []
    verdict = Verdict.CONTINUE
    for i in range(len(x)):
        sample_finite = all_finite(np.asarray(x[i])) and (model._labels or all_finite(np.asarray(y[i])))
        loss = model.train_step(x[i], y[i], learning_rate)
        losses.append(loss)
        saturated = output_saturated(model.interpreter.get_output(0), model.output_details["dtype"], probabilities)
        verdict = monitor.observe(loss, sample_finite, model.state_header().skipped, saturated)
        if verdict is not Verdict.CONTINUE:
            break
    after = float("nan")
    if verdict is Verdict.CONTINUE:
        after = heldout_loss(model, *heldout)
        verdict = monitor.finish(before, after)
    metric_after = metric(model) if metric else None
    if verdict is not Verdict.ACCEPT:
        restore(model, committed, verdict)
    return EpisodeResult(verdict, len(losses), before, after, metric_before, metric_after, losses)


def restore(model, committed: bytes, verdict: Verdict) -> None:
    """Back to the committed adapter, the lifetime counters carried over."""
    live = model._live_state()
    model.load_state(carry_counters(committed, live, verdict))


def counters(header: Header) -> dict:
    """The state's lifetime counters, as `evaluate`/`report`/`fleet` show them."""
    return {
        "optimizer_steps": header.step,
        "skipped_updates": header.skipped,
        "skipped_samples": header.skipped_samples,
        "rejected_episodes": header.rejected_episodes,
        "rollbacks": header.rollbacks,
    }


__all__ = [
    "EpisodeLimits",
    "EpisodeMonitor",
    "EpisodeResult",
    "HEADER_BYTES",
    "Verdict",
    "carry_counters",
    "counters",
    "heldout_loss",
    "restore",
    "run_episode",
]
