"""Streaming models from clip files (tflm_train/streaming.py, docs/streaming.md):
the clip format, clip-by-clip fit/evaluate on hey_jarvis (pymicro-wakeword),
the detection rule and the CLI. A few short synthetic clips: a "word" (a fixed
feature pattern) inside random features, which the shipped model ignores."""

from __future__ import annotations

import importlib.resources
import json

import numpy as np
import pytest

from tflm_train import streaming
from tflm_train.cli import main
from tflm_train.converter import ConvertConfig, convert
from tflm_train.converter.model_ir import Model
from tflm_train.data import DataError
from tflm_train.trainer import PlainModel, TrainableModel

pytestmark = pytest.mark.wakeword

CLIPS, STEPS, WORD_AT = 8, 60, 30


def models_dir():
    return importlib.resources.files("pymicro_wakeword") / "models"


@pytest.fixture(scope="module")
def hey_jarvis() -> bytes:
    return (models_dir() / "hey_jarvis.tflite").read_bytes()


@pytest.fixture(scope="module")
def rule() -> streaming.DetectionRule:
    return streaming.read_manifest(models_dir() / "hey_jarvis.json")


WORD = np.tile(np.linspace(2, 18, 40, dtype=np.float32), (3, 1))


def synthetic_clips(seed: int, clips: int = CLIPS) -> dict:
    """Even clips hold the word at invocations WORD_AT..WORD_AT+19, positive
    window just after it; odd clips are noise only."""
    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 20, (clips, STEPS, 3, 40)).astype(np.float32)
    clip_labels = np.arange(clips) % 2 == 0
    features[clip_labels, WORD_AT : WORD_AT + 20] = WORD
    lengths = np.full(clips, STEPS) - rng.integers(0, 5, clips)
    return {"features": features, "lengths": lengths, "clip_labels": clip_labels.astype(np.int32),
            "positive_start": np.full(clips, WORD_AT + 15), "positive_stop": np.full(clips, WORD_AT + 25)}


def test_manifest_gives_the_rule(rule, tmp_path):
    assert (rule.window, rule.cutoff) == (5, 0.97)
    assert streaming.detection_rule(str(models_dir() / "hey_jarvis.json"), cutoff=0.5).cutoff == 0.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"micro": {"probability_cutoff": 0.9}}))
    with pytest.raises(streaming.ManifestError, match="sliding_window_size"):
        streaming.read_manifest(bad)


def test_detection_rule_is_the_sliding_window_mean():
    rule = streaming.DetectionRule(window=3, cutoff=0.8)
    assert rule.first_detection([0.9, 0.9]) == -1  # the window is not full yet
    assert rule.first_detection([0.0, 0.9, 0.9, 0.9, 0.1]) == 3
    assert not rule.detects([0.9, 0.9, 0.6, 0.9, 0.9, 0.6])  # means 0.8 at best: not above
    assert rule.detects([0.5, 0.95, 0.95, 0.95])


def test_clip_labels_expand_to_per_invocation_labels(tmp_path, hey_jarvis):
    data = synthetic_clips(0, clips=2)
    path = tmp_path / "clips.npz"
    np.savez(path, **data)
    clips = streaming.load_clips(path, (3, 40))
    positive, negative = clips.labels
    assert set(np.flatnonzero(positive == 1)) == set(range(WORD_AT + 15, WORD_AT + 25))
    assert (positive[positive != 1] == streaming.IGNORE).all()
    length = data["lengths"][1]
    assert (negative[:length] == 0).all() and (negative[length:] == streaming.IGNORE).all()
    assert list(clips.positive) == [True, False]


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"features": np.zeros((2, 5, 4, 40), np.float32)}, r"model input is \(3, 40\)"),
        ({"lengths": np.array([0, 3])}, "'lengths' must lie in"),
        ({"positive_stop": np.array([99, 99])}, "positive window"),
        ({"labels": np.zeros((2, STEPS), np.float32)}, "not both"),
        ({"clip_labels": np.array([2, 0])}, "one 0 or 1 per clip"),
    ],
)
def test_bad_clip_files_are_refused(tmp_path, change, phrase):
    data = synthetic_clips(0, clips=2) | change
    path = tmp_path / "clips.npz"
    np.savez(path, **data)
    with pytest.raises(DataError, match=phrase):
        streaming.load_clips(path, (3, 40))


def test_clip_run_equals_the_device_verbs(hey_jarvis):
    """The runner's probabilities in inference mode equal predict() after
    reset_stream, and its training invocations equal train_step's losses."""
    model = TrainableModel(convert(hey_jarvis, ConvertConfig(method="head")).model)
    data = synthetic_clips(3, clips=2)
    clips = streaming.Clips(data["features"], data["lengths"], streaming.window_labels(
        data["clip_labels"], data["lengths"], STEPS, data["positive_start"], data["positive_stop"]))
    runner = streaming.ClipRunner(model)
    q = runner.quantized(clips)
    probabilities, _ = runner.run_clip(q[0], None, 40)
    model.reset_stream()
    expected = [float(model.predict(frame)[0]) for frame in clips.features[0, :40]]
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
    # int8 features (a device's ring buffer) are the model's own input values, used as they are.
    as_int8 = streaming.Clips(q, clips.lengths, clips.labels)
    assert runner.quantized(as_int8) is q
    np.testing.assert_array_equal(runner.run_clip(runner.quantized(as_int8)[0], None, 40)[0], probabilities)
    # Training invocations: the same losses as train_step on a twin model.
    twin = TrainableModel(convert(hey_jarvis, ConvertConfig(method="head")).model)
    _, losses = runner.run_clip(q[0], clips.labels[0], 45, learning_rate=0.05)
    twin.reset_stream()
    want = []
    for frame, label in zip(clips.features[0, :45], clips.labels[0, :45]):
        if label == streaming.IGNORE:
            twin.predict(frame)
        else:
            want.append(twin.train_step(frame, np.array([label], np.float32), 0.05))
    np.testing.assert_allclose(losses, want, rtol=1e-6)
    np.testing.assert_array_equal(model.save_state(), twin.save_state())


def test_fit_learns_the_word_and_keeps_the_stream_apart(hey_jarvis, rule):
    model = TrainableModel(convert(hey_jarvis, ConvertConfig(method="head")).model)
    train, held = synthetic_clips(0), synthetic_clips(1)
    as_clips = lambda d: streaming.Clips(d["features"], d["lengths"], streaming.window_labels(  # noqa: E731
        d["clip_labels"], d["lengths"], STEPS, d["positive_start"], d["positive_stop"]))
    result = streaming.fit(model, as_clips(train), 3, 0.01, rule, held_out={"held": as_clips(held)})
    assert result.before.detected == 0 and result.before.false_accepts == 0  # the shipped model knows no such word
    assert result.after.detected == result.after.positives == CLIPS // 2
    before, after = result.held_out["held"]
    assert before.detected == 0 and after.detected == CLIPS // 2 and after.false_accepts == 0
    assert result.epoch_losses[-1] < 0.3 * result.epoch_losses[0]
    # The original model's detections from the same runner: as pymicro-wakeword's rule gives them.
    original = streaming.detections(streaming.ClipRunner(PlainModel(hey_jarvis)), as_clips(held), rule)
    assert original.detected == 0


def test_cli_fit_and_evaluate_clip_files(hey_jarvis, tmp_path, capsys):
    base = tmp_path / "hey_jarvis.tflite"
    base.write_bytes(hey_jarvis)
    np.savez(tmp_path / "train.npz", **synthetic_clips(0))
    np.savez(tmp_path / "held.npz", **synthetic_clips(1))
    manifest = str(models_dir() / "hey_jarvis.json")
    converted, state = tmp_path / "hj.tflite", tmp_path / "hj.state"
    assert main(["convert", str(base), "--method", "head", "-o", str(converted), "--json"]) == 0
    capsys.readouterr()
    assert main(["fit", str(converted), "--data", str(tmp_path / "train.npz"), "--eval-data",
                 str(tmp_path / "held.npz"), "--epochs", "3", "--manifest", manifest,
                 "--state-out", str(state), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["streaming"] and payload["detection_rule"]["window"] == 5
    assert payload["before"]["detected"] == 0 and payload["after"]["detected"] == CLIPS // 2
    assert payload["eval"][0]["after"]["detection_rate"] == 1.0
    assert payload["eval"][0]["after"]["false_accepts"] == 0
    assert main(["evaluate", str(converted), "--state", str(state), "--data", str(tmp_path / "held.npz"),
                 "--manifest", manifest, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["per_clip"] == payload["eval"][0]["after"]["per_clip"]
    assert main(["evaluate", str(base), "--data", str(tmp_path / "held.npz"), "--manifest", manifest]) == 0
    assert "0/4 positive clips detected" in capsys.readouterr().out


def test_cli_refuses_a_clip_file_without_labels_to_train(hey_jarvis, tmp_path, capsys):
    converted = tmp_path / "hj.tflite"
    converted.write_bytes(convert(hey_jarvis, ConvertConfig(method="head")).model)
    np.savez(tmp_path / "bare.npz", features=synthetic_clips(0)["features"])
    assert main(["fit", str(converted), "--data", str(tmp_path / "bare.npz")]) == 2
    assert "no labelled invocation" in capsys.readouterr().err


def as_clips(data: dict) -> streaming.Clips:
    labels = streaming.window_labels(data["clip_labels"], data["lengths"], STEPS, data["positive_start"],
                                     data["positive_stop"])
    return streaming.Clips(data["features"], data["lengths"], labels)


def test_merge_requantizes_a_head_beyond_the_shipped_scale(hey_jarvis, rule):
    """The float head trains past the shipped int8 range (per-tensor scale
    0.0031: |w| <= 0.395); merge gives it its own int8 scale and the shipped
    output ops (LOGISTIC, uint8 QUANTIZE), and the merged plain model detects
    on exactly the clips the trained one does, probabilities within the
    quantization error (uint8 output step 1/256, logits step 8/127)."""
    from tflm_train.converter.merge import merge
    from tflm_train.converter.state_format import Header, parameters

    result = convert(hey_jarvis, ConvertConfig(method="head", pos_weight=5.0))
    (entry,) = result.metadata["adapted"]
    assert [step["op"] for step in entry["int8_chain"]] == ["LOGISTIC", "QUANTIZE"]
    model = TrainableModel(result.model)
    streaming.fit(model, as_clips(synthetic_clips(0)), 3, 0.05, rule)
    state = model.save_state()
    weights = parameters(state, Header.unpack(state))[:300]
    shipped = Model.from_bytes(hey_jarvis)
    (dense,) = [op for op in shipped.operators if shipped.op_type(op) == "FULLY_CONNECTED"]
    cap = 127 * float(shipped.quant(shipped.inputs_of(dense)[1]).scale[0])
    assert np.abs(weights).max() > 1.5 * cap  # what the shipped int8 layer could not hold

    merged_bytes = merge(result.model, state)
    merged = Model.from_bytes(merged_bytes)
    kinds = [merged.op_type(op) for op in merged.operators]
    assert kinds[-3:] == ["FULLY_CONNECTED", "LOGISTIC", "QUANTIZE"] and not any(k.startswith("TFLMT_") for k in kinds)
    fc = merged.operators[-3]
    assert merged.dtype(merged.inputs_of(fc)[1]) == np.int8
    assert float(merged.quant(merged.inputs_of(fc)[1]).scale[0]) > cap / 127 * 1.5  # its own, larger scale
    plain = PlainModel(merged_bytes)
    assert plain.output_details["dtype"] == np.uint8 and plain.input_details["dtype"] == np.int8  # the shipped interface

    held = as_clips(synthetic_clips(1))
    trained_runner, merged_runner = streaming.ClipRunner(model), streaming.ClipRunner(plain)
    trained = np.concatenate(streaming.clip_probabilities(trained_runner, held))
    folded = np.concatenate(streaming.clip_probabilities(merged_runner, held))
    assert np.abs(trained - folded).max() < 0.02
    assert np.abs(trained - folded).mean() < 0.004
    trained_hits = streaming.detections(trained_runner, held, rule)
    assert streaming.detections(merged_runner, held, rule).per_clip == trained_hits.per_clip
    assert trained_hits.detected == CLIPS // 2


@pytest.mark.tf
def test_merge_keeps_a_float_head_on_a_float_model():
    """Without an int8 layer to go back to, the head merges in float32 as before."""
    from tflm_train.converter.merge import merge
    from test_class_weights import sigmoid_model

    result = convert(sigmoid_model(), ConvertConfig(method="head"))
    assert "int8_chain" not in result.metadata["adapted"][0]
    merged = PlainModel(merge(result.model))
    x = np.linspace(-1, 1, 6, dtype=np.float32)
    np.testing.assert_allclose(merged.predict(x), TrainableModel(result.model).predict(x), rtol=1e-6)
