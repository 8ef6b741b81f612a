"""Models nobody on this project wrote, loaded from the packages that ship them.

- the sine model that the tflite-micro wheel ships (float32 MLP);
- the microWakeWord keyword models that pymicro-wakeword ships: int8
  streaming models whose state lives in resource variables (VAR_HANDLE,
  READ_VARIABLE, ASSIGN_VARIABLE in a CALL_ONCE init subgraph). Their last
  layer trains; the streaming ops stay as they are.
"""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from tflm_train.converter import ConvertConfig, convert
from tflm_train.converter.model_ir import Model
from tflm_train.trainer import PlainModel, TrainableModel


def sine_model() -> bytes:
    path = importlib.resources.files("tflite_micro") / "python" / "tflite_micro" / "sine_float.tflite"
    return path.read_bytes()


def test_sine_model_adapts_to_a_new_amplitude():
    base = sine_model()
    result = convert(base, ConvertConfig(method="lora", r=2, targets="last:2", loss="mse"))
    assert result.metadata["loss"] == "mse"
    model, original = TrainableModel(result.model), PlainModel(base)
    x = np.linspace(0, 2 * np.pi, 64, dtype=np.float32)
    np.testing.assert_array_equal(model.predict(x[3:4]), original.predict(x[3:4]))
    target = 0.6 * np.sin(x)  # the same wave on a sensor with 60% gain
    before = np.mean([model.evaluate_loss(v[None], t[None]) for v, t in zip(x, target)])
    rng = np.random.default_rng(0)
    for _ in range(30):
        for i in rng.permutation(len(x)):
            model.train_step(x[i : i + 1], target[i : i + 1], 0.01)
    after = np.mean([model.evaluate_loss(v[None], t[None]) for v, t in zip(x, target)])
    assert after < 0.2 * before


# ---- microWakeWord -------------------------------------------------------------------------------
WAKE_WORDS = ["alexa", "hey_jarvis", "hey_mycroft", "okay_nabu"]


def wake_word(name: str) -> bytes:
    return (importlib.resources.files("pymicro_wakeword") / "models" / f"{name}.tflite").read_bytes()


def stream(model, frames: np.ndarray, train_label: float | None = None, lr: float = 0.01) -> list[float]:
    """Feeds [3, 40] frame stacks one invoke at a time, like the device does."""
    outputs = []
    for frame in frames:
        if train_label is None:
            outputs.append(float(model.predict(frame)[0]))
        else:
            outputs.append(model.train_step(frame, np.array([train_label], np.float32), lr))
    return outputs


@pytest.mark.wakeword
@pytest.mark.parametrize("name", WAKE_WORDS)
def test_wake_word_bias_keeps_the_model_exact_and_streams(name):
    base = wake_word(name)
    result = convert(base, ConvertConfig(method="bias", targets="last:1"))
    converted = Model.from_bytes(result.model)
    # The streaming machinery is untouched: init subgraph, variables, state ops.
    assert len(converted.raw.subgraphs) == 2
    kinds = [converted.op_type(op) for op in converted.operators]
    assert kinds.count("ASSIGN_VARIABLE") == 6 and "CALL_ONCE" in kinds
    assert result.metadata["loss"] == "bce"
    model, original = TrainableModel(result.model), PlainModel(base)
    frames = np.random.default_rng(3).uniform(0, 20, size=(30, 3, 40)).astype(np.float32)
    np.testing.assert_array_equal(stream(model, frames), stream(original, frames))


def clip(model, frame: np.ndarray, label: float | None = None, lr: float = 0.01) -> float:
    """One clip of a streaming model: empty buffers, 50 invokes (1.5 s, the
    model's receptive field) of the sound in inference mode, then 10 training
    invokes with the clip's label, or one more prediction without a label."""
    model.reset_stream()
    stream(model, np.repeat(frame[None], 50, 0))
    if label is None:
        return stream(model, frame[None])[-1]
    stream(model, np.repeat(frame[None], 10, 0), train_label=label, lr=lr)
    return float("nan")


@pytest.mark.wakeword
def test_wake_word_head_learns_a_new_sound():
    """The head (last FULLY_CONNECTED) learns to fire on one sound and not on
    another, trained clip by clip as a device would."""
    model = TrainableModel(convert(wake_word("hey_jarvis"), ConvertConfig(method="head")).model)
    sound = np.tile(np.linspace(2, 18, 40, dtype=np.float32), (3, 1))
    other = np.tile(np.where(np.arange(40) % 2 == 0, 3.0, 12.0).astype(np.float32), (3, 1))
    assert clip(model, sound) < 0.01 and clip(model, other) < 0.01  # the base model knows neither
    for _ in range(6):
        clip(model, sound, 1.0)
        clip(model, other, 0.0)
    assert clip(model, sound) > 0.9
    assert clip(model, other) < 0.1


@pytest.mark.wakeword
def test_wake_word_conv_targets_report_the_truncated_stream_gradient():
    """A layer whose output is also written to the streaming state trains on
    the current invocation's gradient only; the converter says so."""
    base = wake_word("hey_jarvis")
    result = convert(base, ConvertConfig(method="bias", targets="last:2"))
    assert any("streaming state" in note for note in result.metadata["notes"])


@pytest.mark.wakeword
def test_inspect_lists_resource_tensors():
    from tflm_train.inspection import describe

    report = describe(wake_word("okay_nabu"))
    assert any(layer["op"] == "VAR_HANDLE" and layer["dtype"] == "resource" for layer in report["layers"])
