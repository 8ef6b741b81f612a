"""Continual learning without forgetting: EWC's Fisher diagonal, the replay buffer.

Three tools keep a model good at its original task while it adapts:

- a penalty toward the starting parameters (L2-SP, EWC), carried by the
  optimizer op (converter: ConvertConfig.regularizer). EWC weighs each
  parameter by the Fisher diagonal of the base task, computed here at
  conversion from base-task samples the user gives (`fisher_diagonal`);
- a replay buffer of original-task samples (`ReplayBuffer`): a fixed byte
  budget of records as the model's input tensor holds them (int8 for an int8
  model) plus the target, filled by reservoir sampling, one replayed sample
  trained every k new ones. tflm_ops/device/replay.{h,cc} is the same
  buffer for firmware, decision for decision (same seed, same samples:
  tests/test_continual.py compiles it and compares);
- `fit --retain-data` measures what the original task keeps (the forgetting).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.converter.state_format import HEADER_BYTES, Header
from tflm_train.errors import TflmTrainError
from tflm_train.trainer import TrainableModel, all_finite


class ReplayError(TflmTrainError, ValueError):
    """A replay buffer that cannot be made as asked (message says why)."""

# The probe never applies an update: gradients accumulate until this many
# samples, and every sample starts from a fresh (reset) state anyway.
_NEVER = 2**31 - 1


def fisher_probe_config(config: ConvertConfig) -> ConvertConfig:
    """The same adapters (same parameters in the same order), an optimizer
    that only accumulates, no regularizer: a model whose state shows one
    sample's gradient after one training step."""
    return dataclasses.replace(
        config,
        regularizer="none",
        reg_lambda=0.0,
        fisher=None,
        optimizer=OptimizerConfig(kind="sgd", accumulate=_NEVER),
    )


def fisher_diagonal(
    model_bytes: bytes, config: ConvertConfig, x: np.ndarray, y: np.ndarray, probe: TrainableModel | None = None
) -> np.ndarray:
    """The empirical Fisher diagonal at the initial parameters: the mean over
    the base-task samples of each parameter's squared loss gradient (the
    true labels), every gradient made by the kernels in the TFLM interpreter.

    x, y as `fit` prepares them for the converted model. Samples with
    non-finite values are left out (the kernels would skip them)."""
    if probe is None:
        probe = TrainableModel(convert(model_bytes, fisher_probe_config(config)).model)
    params = probe.info.param_count
    total = np.zeros(params, np.float64)
    used = 0
    for sample, target in zip(x, y):
        if not (all_finite(sample) and all_finite(target)):
            continue
        probe.reset()  # w0 again, gradients zero
        probe.train_step(sample, target, 0.0)
        blob = probe.save_state()
        header = Header.unpack(blob)
        grads = np.frombuffer(blob, "<f4", count=params, offset=HEADER_BYTES + 4 * header.param_count)
        total += grads.astype(np.float64) ** 2
        used += 1
    if used == 0:
        from tflm_train.data import DataError

        raise DataError("no usable base-task sample for the Fisher diagonal (all hold NaN or infinity)")
    return (total / used).astype(np.float32)


def fisher_from_npz(model_bytes: bytes, config: ConvertConfig, path: str) -> tuple[np.ndarray, int]:
    """fisher_diagonal over the samples of an .npz (x, y as for `fit`);
    returns (F, samples used)."""
    from tflm_train import fitting
    from tflm_train.data import load_npz

    probe = TrainableModel(convert(model_bytes, fisher_probe_config(config)).model)
    x, y = fitting.prepare(probe, load_npz(path), fitting.task_of(probe), path)
    return fisher_diagonal(model_bytes, config, x, y, probe=probe), len(x)


# ---- replay buffer -----------------------------------------------------------------------------
_DEFAULT_SEED = 0x9E3779B9


def _mix_seed(seed: int) -> int:
    """MurmurHash3's 32-bit finalizer over seed ^ a constant (replay.cc's
    MixSeed): small seeds would otherwise start xorshift32 with small numbers."""
    h = (seed ^ _DEFAULT_SEED) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h or _DEFAULT_SEED


class XorShift32:
    """The replay buffer's random numbers: Marsaglia's xorshift32 (13, 17, 5)
    from a mixed seed, as tflm_ops/device/replay.cc computes them."""

    def __init__(self, seed: int):
        self.state = _mix_seed(seed & 0xFFFFFFFF)

    def next(self) -> int:
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n: int) -> int:
        """Uniform in [0, n) (multiply-shift, no division)."""
        return (self.next() * n) >> 32


class ReplayBuffer:
    """Original-task samples kept in a fixed byte budget; see the module doc.

    A record is the model's input tensor bytes followed by the target
    tensor bytes (an int32 label for cross-entropy). `offer` is Algorithm R
    (reservoir sampling): every sample offered so far has the same chance
    of being held. `replay_due` is called after each new sample trained and
    says when a replayed sample should be trained (every `every` new ones);
    `pick` chooses which, uniformly."""

    def __init__(self, budget_bytes: int, input_bytes: int, target_bytes: int, seed: int = 0, every: int = 1):
        if every < 1:
            raise ReplayError("--replay-every must be at least 1")
        self.record_bytes = input_bytes + target_bytes
        self.input_bytes = input_bytes
        self.capacity = budget_bytes // self.record_bytes
        if self.capacity < 1:
            raise ReplayError(
                f"a replay budget of {budget_bytes} bytes holds no sample (one takes {self.record_bytes} bytes)"
            )
        self.storage = bytearray(self.capacity * self.record_bytes)
        self.count = 0
        self.seen = 0
        self.every = every
        self.since_replay = 0
        self.rng = XorShift32(seed)
        self.sources: list[int] = [-1] * self.capacity  # which offered sample each slot holds (host only)

    @property
    def bytes_used(self) -> int:
        return self.capacity * self.record_bytes

    def offer(self, input_bytes: bytes, target_bytes: bytes) -> int:
        """Returns the slot written, or -1 when the sample is not kept."""
        record = bytes(input_bytes) + bytes(target_bytes)
        if len(record) != self.record_bytes:
            raise ReplayError(f"a replay record is {self.record_bytes} bytes, got {len(record)}")
        if self.count < self.capacity:
            slot = self.count
            self.count += 1
        else:
            slot = self.rng.below(self.seen + 1)
            if slot >= self.capacity:
                slot = -1
        if slot >= 0:
            self.storage[slot * self.record_bytes : (slot + 1) * self.record_bytes] = record
            self.sources[slot] = self.seen
        self.seen += 1
        return slot

    def pick(self) -> int:
        """A held slot, uniformly (the RNG advances); -1 when empty."""
        return self.rng.below(self.count) if self.count else -1

    def record(self, slot: int) -> tuple[bytes, bytes]:
        """(input bytes, target bytes) of a slot."""
        start = slot * self.record_bytes
        return (
            bytes(self.storage[start : start + self.input_bytes]),
            bytes(self.storage[start + self.input_bytes : start + self.record_bytes]),
        )

    def replay_due(self) -> bool:
        """After each new sample trained: True on every `every`-th."""
        self.since_replay += 1
        if self.since_replay < self.every or self.count == 0:
            return False
        self.since_replay = 0
        return True


def _input_codec(model: TrainableModel):
    return model.input_details, model.interpreter.input_details(model.info.input_index("target"))


def fill_replay(
    model: TrainableModel, x: np.ndarray, y: np.ndarray, budget_bytes: int, every: int, seed: int = 0
) -> ReplayBuffer:
    """A replay buffer for `model`, offered the base-task samples in order
    (as a device would offer them as they pass). Records hold the samples as
    the model's input tensor holds them: int8 for an int8 model."""
    from tflm_train.trainer import quantize

    input_details, target_details = _input_codec(model)
    input_bytes = int(np.prod(input_details["shape"])) * np.dtype(input_details["dtype"]).itemsize
    target_bytes = int(np.prod(target_details["shape"])) * np.dtype(target_details["dtype"]).itemsize
    buffer = ReplayBuffer(budget_bytes, input_bytes, target_bytes, seed=seed, every=every)
    for sample, target in zip(x, y):
        if not (all_finite(sample) and all_finite(target)):
            continue  # never stored: a device guards the same way
        buffer.offer(
            quantize(np.asarray(sample)[None], input_details).tobytes(),
            quantize(np.asarray(target)[None], target_details).tobytes(),
        )
    return buffer


def replayed_sample(model: TrainableModel, buffer: ReplayBuffer, slot: int) -> tuple[np.ndarray, np.ndarray]:
    """A record back as real values (x, y) for train_step, which quantizes x
    again to exactly the stored bytes (tests/test_continual.py checks)."""
    from tflm_train.trainer import dequantize

    input_details, target_details = _input_codec(model)
    raw_x, raw_y = buffer.record(slot)
    x = np.frombuffer(raw_x, np.dtype(input_details["dtype"])).reshape(input_details["shape"])
    y = np.frombuffer(raw_y, np.dtype(target_details["dtype"])).reshape(target_details["shape"])
    real_x = dequantize(x, input_details)[0]
    if np.dtype(target_details["dtype"]) == np.int32:  # class labels, one per row
        real_y = int(y[0]) if y.size == 1 else y.copy()
    else:
        real_y = dequantize(y, target_details)[0]
    return real_x, real_y
