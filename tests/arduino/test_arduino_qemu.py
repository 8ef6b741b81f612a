"""The Arduino library's SelfTest sketch on Cortex-M under QEMU (needs TFLM_DIR).

The sketch as Arduino users build it (the generated library, the .ino) with
our Arduino shim on the firmware's startup code (Serial is semihosting
stdout), trains the bundled digits example from C arrays and compares every
loss with the host's, which the library generator recorded in the sketch's
data header from the TFLM x86 interpreter.
"""

from __future__ import annotations

import os

import pytest

from tflm_train import qemu

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
