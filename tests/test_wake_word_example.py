"""examples/wake_word: its features are pymicro-wakeword's own, byte for byte,
and its premise holds: the shipped hey_jarvis misses the adapted espeak-ng
voice and detects the known ones (the full before/after run is the example's
script, not a test)."""

from __future__ import annotations

import importlib.resources
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "wake_word"))
import data  # noqa: E402

pytestmark = pytest.mark.wakeword


def _pymicro_invocations(audio: np.ndarray) -> np.ndarray:
    """What MicroWakeWord.process_streaming writes into the input tensor, per
    invocation, computed by pymicro-wakeword itself."""
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

    mww = MicroWakeWord.from_builtin(Model.HEY_JARVIS)
    frames = list(MicroWakeWordFeatures().process_streaming(audio.astype("<i2").tobytes()))
    invocations = []
    for i in range(0, len(frames) - len(frames) % mww.stride, mww.stride):
        stacked = np.concatenate(frames[i : i + mww.stride], axis=1)
        invocations.append(np.round(stacked / mww.input_scale + mww.input_zero_point).astype(mww.input_dtype)[0])
    return np.asarray(invocations), (mww.input_scale, mww.input_zero_point)


def test_features_are_pymicro_wakewords():
    rng = np.random.default_rng(0)
    t = np.arange(int(1.3 * data.SAMPLE_RATE)) / data.SAMPLE_RATE
    audio = 6000 * np.sin(2 * np.pi * (300 + 900 * t) * t) + rng.normal(0, 400, t.size)
    audio = np.clip(audio, -32768, 32767).astype(np.int16)
    expected, (scale, zero_point) = _pymicro_invocations(audio)
    frames = data.frontend_features(audio)
    n = len(frames) // data.STRIDE
    ours = data.quantize_like_pymicro(frames[: n * data.STRIDE], scale, zero_point).reshape(n, data.STRIDE, -1)
    assert ours.shape == expected.shape == (n, 3, 40) and n > 40
    np.testing.assert_array_equal(ours, expected)
    assert len(np.unique(ours)) > 20  # real features, not a constant


def test_shipped_model_misses_the_adapted_voice_and_knows_the_others():
    assert shutil.which("espeak-ng"), "espeak-ng is needed: apt-get install espeak-ng (.ci/run installs it)"
    from tflm_train.streaming import ClipRunner, Clips, DetectionRule, detections
    from tflm_train.trainer import PlainModel

    models = importlib.resources.files("pymicro_wakeword") / "models"
    model = PlainModel((models / "hey_jarvis.tflite").read_bytes())
    runner = ClipRunner(model)
    rule = DetectionRule(window=5, cutoff=0.97)
    scale, zero_point = model.input_details["quantization_parameters"]["scales"][0], int(
        model.input_details["quantization_parameters"]["zero_points"][0])

    def rate(voice: str) -> float:
        clips = data.voice_set(voice, positives=3, negatives=0, seed=7, scale=float(scale), zero_point=zero_point)
        assert (clips.labels == 1).sum(axis=1).min() > 0  # every positive clip has its window
        found = detections(runner, Clips(clips.features, clips.lengths, clips.labels.astype(np.float32)), rule)
        return found.detection_rate

    assert rate(data.ADAPTED_VOICE) == 0.0
    assert rate(data.KNOWN_VOICES[0]) == 1.0
