"""Episodes with acceptance and rollback (tflm_train/episodes.py and its
device twin tflm_ops/device/episode.{h,cc} + tflmt::Trainer::Restore).

On the digits example: an episode on the new writer's data is accepted, one
with poisoned labels is rejected by the held-out check, one with a huge
learning rate is stopped and rolled back; the adapter afterwards is exactly
the committed one, and the counters (rejected episodes, rollbacks) live in
the state's header, survive save/load and show in `evaluate` and `report`.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tflm_train import episodes
from tflm_train.cli import main
from tflm_train.converter import ConvertConfig, convert
from tflm_train.converter.state_format import HEADER_BYTES, Header, checksum
from tflm_train.episodes import EpisodeLimits, EpisodeMonitor, Verdict, run_episode
from tflm_train.trainer import TrainableModel

ROOT = Path(__file__).resolve().parents[1]


# ---- the monitor: Python and the device's C++ give the same verdicts ------------------------
@pytest.fixture(scope="module")
def device_monitor(tmp_path_factory) -> Path:
    compiler = shutil.which("g++")
    assert compiler, "g++ is needed to build the device monitor's host runner"
    binary = tmp_path_factory.mktemp("monitor") / "episode_monitor"
    subprocess.run([compiler, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                    f"-I{ROOT / 'tflm_ops'}", str(ROOT / "tests/store/episode_monitor_main.cc"),
                    str(ROOT / "tflm_ops/device/episode.cc"), "-o", str(binary)], check=True)
    return binary


def _hex(value: float) -> str:
    return float(np.float32(value)).hex() if math.isfinite(value) else str(float(value))


def random_episodes(rng: np.random.Generator, count: int):
    """Loss sequences of every kind: stable and noisy, rising, spiking, with
    NaN losses, skipped samples, dropped updates, saturated outputs."""
    for _ in range(count):
        kind = rng.integers(0, 6)
        steps = int(rng.integers(1, 60))
        baseline = float("nan") if rng.random() < 0.2 else float(rng.uniform(0.1, 3))
        losses = rng.gamma(2.0, 0.5, steps).astype(np.float32)
        if kind == 1:  # rises
            losses *= np.linspace(1, float(rng.uniform(2, 40)), steps, dtype=np.float32)
        elif kind == 2:  # one spike
            losses[rng.integers(0, steps)] *= 50
        finite = rng.random(steps) > (0.1 if kind == 3 else 0)
        skipped = np.zeros(steps, np.int64)
        if kind == 4 and steps > 3:  # the optimizer drops an update
            skipped[rng.integers(1, steps):] = 1
        if kind == 5 and steps > 3:
            losses[rng.integers(1, steps)] = np.nan
        saturated = np.ones(steps, bool) if rng.random() < 0.15 else rng.random(steps) < 0.5
        new = float(rng.uniform(0.1, 3)) if rng.random() > 0.05 else float("nan")
        yield baseline, list(zip(losses.tolist(), finite.tolist(), skipped.tolist(), saturated.tolist())), new


def test_python_monitor_matches_the_device_monitor(device_monitor):
    rng = np.random.default_rng(7)
    commands, expected = [], []
    for baseline, steps, new in random_episodes(rng, 400):
        monitor = EpisodeMonitor()
        monitor.begin(0, baseline)
        commands.append(f"b 0 {_hex(baseline)}")
        verdict = Verdict.CONTINUE
        for loss, finite, skipped, saturated in steps:
            verdict = monitor.observe(loss, finite, skipped, saturated)
            commands.append(f"O {_hex(loss)} {int(finite)} {skipped} {int(saturated)}")
            expected.append(verdict.value)
            if verdict is not Verdict.CONTINUE:
                break
        if verdict is Verdict.CONTINUE:
            committed = baseline if math.isfinite(baseline) else 1.0
            expected.append(monitor.finish(committed, new).value)
            commands.append(f"f {_hex(committed)} {_hex(new)}")
    run = subprocess.run([str(device_monitor)], input="\n".join(commands) + "\n", capture_output=True,
                         text=True, check=True)
    device = [int(line) for line in run.stdout.split()]
    assert device == expected
    # Every verdict occurred, so every branch was compared.
    assert {v.value for v in Verdict} <= set(expected)


def test_monitor_needs_persistence_not_one_spike():
    monitor = EpisodeMonitor(EpisodeLimits(warmup_steps=0, patience=4))
    monitor.begin(0, 1.0)
    verdicts = [monitor.observe(loss, True, 0, False) for loss in [1, 1, 25, 1, 1, 1]]
    assert set(verdicts) == {Verdict.CONTINUE}  # one bad sample (25x) is not divergence
    monitor.begin(0, 1.0)
    verdicts = [monitor.observe(loss, True, 0, False) for loss in [1, 1] + [60] * 8]
    assert Verdict.LOSS_DIVERGED in verdicts
    monitor.begin(0, 1.0)
    assert monitor.observe(1.0, True, 1, False) is Verdict.NOT_FINITE


def test_output_saturated():
    assert episodes.output_saturated(np.array([[-128, 127, -128]], np.int8), np.int8, True)
    assert not episodes.output_saturated(np.array([[-128, 126, -128]], np.int8), np.int8, True)
    assert episodes.output_saturated(np.array([[0.0, 1.0]], np.float32), np.float32, True)
    assert not episodes.output_saturated(np.array([[0.3, 0.7]], np.float32), np.float32, True)


# ---- the lifecycle on the digits example -------------------------------------------------------
@pytest.fixture(scope="module")
def converted(digits) -> bytes:
    return convert(digits.int8_model, ConvertConfig()).model


def _episode_data(digits, seed: int, poison: bool = False):
    order = np.random.default_rng(seed).permutation(np.tile(np.arange(len(digits.user_train.x)), 2))
    x, y = digits.user_train.x[order], digits.user_train.y[order].astype(np.int32)
    if poison:  # every label wrong
        y = ((y + 1 + np.random.default_rng(seed).integers(0, 9, len(y))) % 10).astype(np.int32)
    return x, y


def _params(blob: bytes) -> bytes:
    header = Header.unpack(blob)
    return blob[HEADER_BYTES : HEADER_BYTES + 4 * header.param_count]


def test_good_episode_accepted_bad_ones_rejected_or_rolled_back(converted, digits):
    model = TrainableModel(converted)
    heldout = (digits.user_test.x[:32], digits.user_test.y[:32])

    good = run_episode(model, *_episode_data(digits, 1), heldout, 0.02)
    assert good.verdict is Verdict.ACCEPT and good.steps == 128
    assert good.heldout_after < good.heldout_before
    committed = model.save_state()
    assert Header.unpack(committed).step == 128

    poisoned = run_episode(model, *_episode_data(digits, 2, poison=True), heldout, 0.02)
    assert poisoned.verdict is Verdict.REJECT and poisoned.steps == 128
    assert poisoned.heldout_after > poisoned.heldout_before
    after_reject = model.save_state()
    assert _params(after_reject) == _params(committed)  # exactly the committed adapter
    assert Header.unpack(after_reject).rejected_episodes == 1

    huge_lr = run_episode(model, *_episode_data(digits, 3), heldout, 0.5)
    assert huge_lr.verdict.rolled_back and huge_lr.steps < 128  # stopped early
    after_rollback = model.save_state()
    assert _params(after_rollback) == _params(committed)
    header = Header.unpack(after_rollback)
    assert (header.rejected_episodes, header.rollbacks, header.step) == (1, 1, 128)
    assert header.crc == checksum(after_rollback)

    # The restored adapter predicts as the committed one, and the counters
    # survive a reboot (a fresh interpreter loading the state).
    rebooted = TrainableModel(converted)
    rebooted.load_state(committed)
    for x in digits.user_test.x[:10]:
        np.testing.assert_array_equal(model.predict(x), rebooted.predict(x))
    rebooted.load_state(after_rollback)
    assert episodes.counters(rebooted.state_header())["rollbacks"] == 1

    # Training continues after a rollback: the next good episode is accepted.
    again = run_episode(model, *_episode_data(digits, 4), heldout, 0.02)
    assert again.verdict is Verdict.ACCEPT
    assert Header.unpack(model.save_state()).step == 256


def test_cli_episodes_then_evaluate_and_report_show_counters(converted, digits, tmp_path, capsys):
    model_path = tmp_path / "train.tflite"
    model_path.write_bytes(converted)
    x, y = digits.user_train.x, digits.user_train.y.astype(np.int32)
    np.savez(tmp_path / "new.npz", x=x[:32], y=y[:32])
    np.savez(tmp_path / "poisoned.npz", x=x[32:], y=(y[32:] + 3) % 10)
    np.savez(tmp_path / "heldout.npz", x=digits.user_test.x[:32], y=digits.user_test.y[:32])
    state = tmp_path / "device.state"
    args = ["episodes", str(model_path), "--data", str(tmp_path / "new.npz"), "--data",
            str(tmp_path / "poisoned.npz"), "--heldout", str(tmp_path / "heldout.npz"), "--state-out", str(state)]
    assert main(args + ["--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [e["verdict"] for e in payload["episodes"]] == ["accept", "reject"]
    assert payload["counters"]["rejected_episodes"] == 1

    assert main(["episodes", str(model_path), "--data", str(tmp_path / "new.npz"), "--lr", "0.5", "--heldout",
                 str(tmp_path / "heldout.npz"), "--state-in", str(state), "--state-out", str(state)]) == 0
    text = capsys.readouterr().out
    assert "rolled back" in text and "1 rejected episodes, 1 rollbacks" in text

    assert main(["evaluate", str(model_path), "--data", str(tmp_path / "heldout.npz"), "--state", str(state),
                 "--json"]) == 0
    counters = json.loads(capsys.readouterr().out)["counters"]
    assert (counters["rejected_episodes"], counters["rollbacks"]) == (1, 1)
    assert main(["report", str(model_path), "--state", str(state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counters"] == counters
    assert main(["report", str(model_path), "--state", str(state)]) == 0
    assert "1 rejected episodes, 1 rollbacks" in capsys.readouterr().out


def test_cli_episodes_refuses_a_foreign_state(converted, digits, tmp_path, capsys):
    model_path = tmp_path / "train.tflite"
    model_path.write_bytes(converted)
    np.savez(tmp_path / "d.npz", x=digits.user_train.x[:4], y=digits.user_train.y[:4])
    (tmp_path / "bad.state").write_bytes(b"TMTS" + bytes(100))
    assert main(["episodes", str(model_path), "--data", str(tmp_path / "d.npz"), "--heldout",
                 str(tmp_path / "d.npz"), "--state-in", str(tmp_path / "bad.state")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state" in err
