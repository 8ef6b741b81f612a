"""Cross-builds tflm_ops/ with one of its toolchain files (for the tests that
inspect the Cortex-M objects). Without arm-none-eabi-g++ the calling test is
skipped, or fails where CI requires the toolchain (TFLMT_REQUIRE_CORTEX_M4=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build_kernels(build: Path, core: str) -> Path:
    """Configures and builds tflm_ops/ for `core` (tflm_ops/cmake/<core>.cmake)
    into `build` (the library's flags include -Werror); returns `build`."""
    if shutil.which("arm-none-eabi-g++") is None:
        if os.environ.get("TFLMT_REQUIRE_CORTEX_M4") == "1":
            pytest.fail("arm-none-eabi-g++ is required here (apt-get install gcc-arm-none-eabi)")
        pytest.skip("arm-none-eabi-g++ is not installed (apt-get install gcc-arm-none-eabi)")
    toolchain = ROOT / f"tflm_ops/cmake/{core}.cmake"
    subprocess.run(["cmake", "-S", str(ROOT / "tflm_ops"), "-B", str(build), "--toolchain", str(toolchain)],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    return build
