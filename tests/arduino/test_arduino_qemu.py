"""The Arduino library's SelfTest sketch on Cortex-M under QEMU (needs TFLM_DIR).

The sketch as Arduino users build it (the generated library, the .ino) with
our Arduino shim on the firmware's startup code (Serial is semihosting
stdout), trains the bundled digits example from C arrays and compares every
loss with the host's, which the library generator recorded in the sketch's
data header from the TFLM x86 interpreter.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from tflm_train import qemu

# What the scripted IMU replays (arduino/generate.py, motion_qemu_session).
MOTIONS_TRAIN = qemu.ROOT / "tflm_train" / "examples" / "basic_motions" / "user_train.npz"

needs_tflm = pytest.mark.skipif(not os.environ.get("TFLM_DIR"),
                                reason="set TFLM_DIR to a tflite-micro checkout to run sketches under QEMU")


@needs_tflm
@pytest.mark.parametrize("core", list(qemu.CORES))
def test_self_test_sketch_matches_the_host_under_qemu(core, tmp_path):
    from tflm_train.device_run import build_sketch, tflm_dir

    if qemu.missing_tools():
        pytest.skip(f"{', '.join(qemu.missing_tools())} not installed")
    elf = build_sketch(qemu.CORES[core], "SelfTest", tflm_dir(None))
    log = qemu.run_qemu(qemu.CORES[core], elf, cwd=tmp_path, timeout=900)
    steps = [line for line in log.splitlines() if line.startswith("step ")]
    assert len(steps) == 128, log[-2000:]
    differing = [line for line in steps if not line.endswith(" match")]
    assert not differing, differing[:5]
    assert "SelfTest: PASS" in log


def _accuracy(line: str) -> tuple[int, int]:
    match = re.search(r"accuracy on the recorded windows: (\d+)/(\d+) \(", line)
    assert match, line
    return int(match.group(1)), int(match.group(2))


@needs_tflm
@pytest.mark.parametrize("core", list(qemu.CORES))
def test_motion_personalize_sketch_trains_and_keeps_its_adapter_across_a_reset(core, tmp_path):
    """The IMU sketch in a scripted session (arduino/shim/qemu_session.cpp):
    the IMU replays the 12 user_train windows, label/record buttons and Serial
    keys record them with their labels, 't' trains 40 epochs and saves the
    adapter; the board resets (SYSRESETREQ, same QEMU run); after the reset
    the sketch restores the adapter from the emulated flash, records the same
    windows again and reports the accuracy the trained adapter had."""
    from tflm_train.device_run import build_sketch, tflm_dir

    if qemu.missing_tools():
        pytest.skip(f"{', '.join(qemu.missing_tools())} not installed")
    elf = build_sketch(qemu.CORES[core], "MotionPersonalize", tflm_dir(None))
    log = qemu.run_qemu(qemu.CORES[core], elf, cwd=tmp_path, timeout=1500)
    first, reset, second = log.partition("[qemu session] end of boot 1: reset")
    assert reset, log[-3000:]

    # Boot 1: nothing saved yet; 12 windows recorded with the script's labels
    # (buttons and Serial both used); training lowers the loss and raises the
    # accuracy on the recorded windows; the adapter is saved.
    assert "storage: emulated flash" in first, first[:2000]
    assert "no saved adapter: base model" in first
    assert re.findall(r"recorded window (\d+)", first) == [str(i) for i in range(1, 13)], first[-3000:]
    activities = ["standing", "walking", "running", "badminton"]
    expected = [activities[int(label)] for label in np.load(MOTIONS_TRAIN)["y"]]
    assert re.findall(r"recording (\w+) for 10 s", first) == expected, first[-3000:]
    assert re.findall(r"recording (\w+) for 10 s", second) == expected
    accuracy = [_accuracy(line) for line in first.splitlines() if line.startswith("accuracy")]
    assert len(accuracy) == 2, first[-3000:]
    (before, total), (after, total_after) = accuracy
    assert total == total_after == 12
    assert after > before, accuracy
    losses = [float(v) for v in re.findall(r"epoch \d+ mean loss ([0-9.]+)", first)]
    assert len(losses) == 5 and losses[-1] < losses[0], losses
    saved = re.search(r"adapter saved \((\d+) B\)", first)
    assert saved and int(saved.group(1)) > 0, first[-3000:]

    # Boot 2 (after the reset): the adapter comes back from the emulated
    # flash and classifies the same windows exactly as after training.
    assert "saved adapter restored" in second, second[:2000]
    assert "no saved adapter" not in second
    assert re.findall(r"recorded window (\d+)", second) == [str(i) for i in range(1, 13)]
    restored = [_accuracy(line) for line in second.splitlines() if line.startswith("accuracy")]
    assert restored == [(after, 12)], second[-3000:]
