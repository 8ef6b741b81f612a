"""The adapter delta (tflm_train/fleet/delta.py): what a device sends after a
round. Only the trainable tensors' changes leave it (not the gradient
accumulators or optimizer slots), float32 exactly, int8 within half a step,
top-k keeps the largest changes; a delta for another base model or another
conversion is refused with a message naming the hashes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tflm_train.converter import ConvertConfig, OptimizerConfig, convert
from tflm_train.converter.state_format import HEADER_BYTES, Header
from tflm_train.fleet.delta import AdapterLayout, Delta, DeltaFormatError, ForeignDeltaError
from tflm_train.trainer import TrainableModel


def _trained(model_bytes: bytes, data, steps: int, lr: float = 0.05):
    """A model's starting and trained states (one sample per step)."""
    model = TrainableModel(model_bytes)
    start = model.save_state()
    for i in range(steps):
        model.train_step(data.x[i % len(data.x)], data.y[i % len(data.y)], lr)
    return model, start, model.save_state()


@pytest.fixture(scope="module")
def adam_model(digits):
    return convert(digits.int8_model, ConvertConfig(optimizer=OptimizerConfig(kind="adam"))).model


@pytest.fixture(scope="module")
def round_states(adam_model, digits):
    layout = AdapterLayout.of_model(adam_model)
    _, start, end = _trained(adam_model, digits.user_train, 48)
    return layout, layout.adapter(start), layout.adapter(end), end


def test_float32_delta_is_the_exact_change_of_the_adapter_only(round_states, adam_model):
    layout, start, end, end_state = round_states
    delta = Delta.between(layout, start, end, num_examples=48)
    blob = delta.to_bytes()
    # Header + per tensor (count + values): the P parameters and nothing of the
    # P gradients and 2P Adam slots the state holds.
    P = layout.param_count
    assert len(blob) == 32 + 4 * len(layout.slots) + 4 * P
    assert len(end_state) == HEADER_BYTES + 4 * P * 4
    decoded = Delta.from_bytes(blob, layout)
    assert decoded.num_examples == 48 and decoded.encoding == "float32"
    changed = 0
    for name, d in decoded.dense(layout).items():
        np.testing.assert_array_equal(d, end[name] - start[name])
        changed += int(np.count_nonzero(d))
    assert changed > P // 2  # training moved the adapter
    # The optimizer state is not in the delta: the same delta whatever the
    # gradient accumulators and slots hold.
    other_slots = bytearray(end_state)
    other_slots[HEADER_BYTES + 4 * P :] = np.random.default_rng(0).normal(size=3 * P).astype("<f4").tobytes()
    other_end = layout.adapter(bytes(other_slots))
    assert Delta.between(layout, start, other_end, num_examples=48).to_bytes() == blob


def test_int8_delta_is_within_half_a_step_and_four_times_smaller(round_states):
    layout, start, end, _ = round_states
    exact = {n: end[n] - start[n] for n in layout.names}
    delta = Delta.between(layout, start, end, encoding="int8")
    blob = delta.to_bytes()
    expected_bytes = 32 + sum(8 + s.size + (-s.size % 4) for s in layout.slots)
    assert len(blob) == expected_bytes
    float_bytes = len(Delta.between(layout, start, end).to_bytes())
    assert float_bytes / len(blob) > 3.3
    decoded = Delta.from_bytes(blob, layout)
    for tensor, slot in zip(decoded.tensors, layout.slots):
        d = exact[slot.name].reshape(-1)
        assert tensor.values.dtype == np.int8
        assert tensor.scale == pytest.approx(np.abs(d).max() / 127, rel=1e-6)
        assert np.abs(tensor.dense(slot.size) - d).max() <= tensor.scale / 2 * 1.0001
        assert np.abs(tensor.values).max() == 127  # the full range is used
    rebuilt = decoded.apply(layout, start)
    for tensor, slot in zip(decoded.tensors, layout.slots):
        assert np.abs(rebuilt[slot.name] - end[slot.name]).max() <= tensor.scale / 2 * 1.001 + 1e-6


@pytest.mark.parametrize("encoding", ["float32", "int8"])
def test_top_k_sends_the_largest_changes_with_their_positions(round_states, encoding):
    layout, start, end, _ = round_states
    delta = Delta.between(layout, start, end, encoding=encoding, top_k=0.1)
    decoded = Delta.from_bytes(delta.to_bytes(), layout)
    assert decoded.top_k == pytest.approx(0.1)
    for tensor, slot in zip(decoded.tensors, layout.slots):
        d = (end[slot.name] - start[slot.name]).reshape(-1)
        k = math.ceil(0.1 * slot.size)
        assert tensor.values.size == tensor.index.size == k
        kept = set(tensor.index.tolist())
        # Every kept change is at least as large as every dropped one.
        assert np.abs(d[list(kept)]).min() >= np.abs(np.delete(d, list(kept))).max()
        dense = tensor.dense(slot.size)
        assert np.all(dense[np.delete(np.arange(slot.size), list(kept))] == 0)
        tolerance = 0 if encoding == "float32" else tensor.scale / 2 * 1.0001
        assert np.abs(dense[list(kept)] - d[list(kept)]).max() <= tolerance
    value_bytes = 4 if encoding == "float32" else 1
    expected = 32
    for slot in layout.slots:  # count, [scale], k u16 positions, k values, padding
        k = math.ceil(0.1 * slot.size)
        size = 4 + (4 if encoding == "int8" else 0) + 2 * k + value_bytes * k
        expected += size + (-size % 4)
    assert delta.nbytes == expected


def test_with_adapter_replaces_the_parameters_and_keeps_the_device_state(adam_model, digits, round_states):
    layout, start, end, end_state = round_states
    new = layout.with_adapter(end_state, start)  # the device receives the (older) global adapter
    P = layout.param_count
    assert new[HEADER_BYTES + 4 * P :] == end_state[HEADER_BYTES + 4 * P :]  # gradients and Adam slots stay
    old_header, new_header = Header.unpack(end_state), Header.unpack(new)
    assert (new_header.step, new_header.skipped_samples) == (old_header.step, old_header.skipped_samples)
    model = TrainableModel(adam_model)
    model.load_state(new)  # a valid, sealed state the kernel accepts
    model.train_step(digits.user_train.x[0], digits.user_train.y[0], 0.01)
    assert Header.unpack(model.save_state()).step == old_header.step + 1
    for name in layout.names:
        np.testing.assert_array_equal(layout.adapter(new)[name], start[name])


def test_a_delta_for_another_model_or_conversion_is_refused(digits, round_states):
    layout, start, end, _ = round_states
    blob = Delta.between(layout, start, end).to_bytes()
    # Another conversion of the same base model (other optimizer: other layout hash).
    sgd_layout = AdapterLayout.of_model(convert(digits.int8_model, ConvertConfig()).model)
    with pytest.raises(ForeignDeltaError, match="another conversion of this model") as refused:
        Delta.from_bytes(blob, sgd_layout)
    assert f"{layout.layout_hash:08x}" in str(refused.value) and f"{sgd_layout.layout_hash:08x}" in str(refused.value)
    # Another base model.
    other = AdapterLayout.of_model(convert(digits.float_model, ConvertConfig(optimizer=OptimizerConfig(kind="adam"))).model)
    assert other.base_model_hash != layout.base_model_hash
    with pytest.raises(ForeignDeltaError, match="another base model") as refused:
        Delta.from_bytes(blob, other)
    assert f"{layout.base_model_hash:016x}" in str(refused.value)
    # Damaged bytes: one clear error, never a crash.
    for bad in (blob[:20], blob[:-4], b"XXXX" + blob[4:], blob + b"\0\0\0\0"):
        with pytest.raises((DeltaFormatError, ForeignDeltaError)):
            Delta.from_bytes(bad, layout)
    nan = Delta.between(layout, start, end)
    nan.tensors[0].values[0] = np.nan
    with pytest.raises(ForeignDeltaError, match="non-finite"):
        Delta.from_bytes(nan.to_bytes(), layout)


def test_integer_state_adapter_round_trips_in_real_units(digits):
    """An integer (--arithmetic int8) state: the adapter leaves in real units
    and comes back onto the int16 grid of each tensor's scale."""
    converted = convert(digits.int8_model, ConvertConfig(arithmetic="int8")).model
    layout = AdapterLayout.of_model(converted)
    assert layout.integer and all(slot.scale for slot in layout.slots)
    _, start_state, end_state = _trained(converted, digits.user_train, 32)
    start, end = layout.adapter(start_state), layout.adapter(end_state)
    delta = Delta.between(layout, start, end)
    back = layout.with_adapter(start_state, delta.apply(layout, start))
    for slot in layout.slots:
        np.testing.assert_allclose(layout.adapter(back)[slot.name], end[slot.name], atol=slot.scale / 2)
