"""One host (x86) build of our device library against a real TFLM tree (TFLM_DIR),
shared by the tests that run device code on the real MicroInterpreter: link a
test's main against it with `link_host_program`."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def link_host_program(main_source: Path, output: Path) -> Path:
    """Builds (once, cached) tflm_train_tflm + TFLM for the host and links
    `main_source` against them into `output`."""
    from tflm_train.device_run import cache_dir, third_party_includes

    tflm = Path(os.environ["TFLM_DIR"])
    includes = third_party_includes(tflm)
    # Keyed by this source tree too: a CMake build directory belongs to one tree.
    key = hashlib.sha256("|".join([str(tflm), str(ROOT), *includes]).encode()).hexdigest()[:12]
    build = Path(os.environ.get("TFLMT_HOST_TFLM_BUILD") or cache_dir() / f"host-tflm-{key}")
    subprocess.run(["cmake", "-S", str(ROOT / "tflm_ops"), "-B", str(build), f"-DTFLM_DIR={tflm}",
                    f"-DTFLMT_EXTRA_INCLUDE_DIRS={';'.join(includes)}", "-DTFLMT_BUILD_HOST_EXAMPLE=ON",
                    "-DTFLMT_BUILD_WHEEL_PLUGIN=OFF"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "tflm_train_tflm", "tflmt_tflm_micro"],
                   check=True, capture_output=True)
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-fno-rtti",
             "-fno-exceptions", "-DTF_LITE_STATIC_MEMORY", f"-I{ROOT / 'tflm_ops'}", f"-isystem{tflm}",
             *(f"-isystem{d}" for d in includes)]
    subprocess.run([shutil.which("g++") or "g++", *flags, str(main_source), str(build / "libtflm_train_tflm.a"),
                    str(build / "libtflmt_tflm_micro.a"), "-o", str(output)], check=True)
    return output
