"""The kernels are device code: they build for Cortex-M4 with -Werror and use
no heap, exceptions, RTTI or mutable globals (checked on the object files)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cross_build import build_kernels

pytestmark = pytest.mark.slow  # a CMake cross-build of every kernel: ~20 s
FORBIDDEN = ("malloc", "calloc", "realloc", "free", "_Znwj", "_Znaj", "_ZdlPv", "_ZdaPv", "__cxa_throw",
             "__cxa_allocate_exception", "__gxx_personality_v0", "__cxa_guard_acquire", "_ZTVN10__cxxabiv")


@pytest.fixture(scope="module")
def cortex_m4_library(tmp_path_factory) -> Path:
    build = build_kernels(tmp_path_factory.mktemp("cortex-m4"), "cortex-m4")
    return build / "libtflm_train_kernels.a"


def test_kernels_build_for_cortex_m4(cortex_m4_library):
    assert cortex_m4_library.is_file()
    header = subprocess.run(["arm-none-eabi-readelf", "-h", str(cortex_m4_library)], capture_output=True, text=True).stdout
    assert "ARM" in header


def test_kernels_have_no_heap_exceptions_or_rtti(cortex_m4_library):
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(cortex_m4_library)], capture_output=True, text=True).stdout
    symbols = {line.split()[-1] for line in undefined.splitlines() if line.strip() and not line.endswith(":")}
    assert not [s for s in symbols if s in FORBIDDEN or s.startswith(FORBIDDEN[-1])]


def test_kernels_have_no_mutable_globals(cortex_m4_library):
    sizes = subprocess.run(["arm-none-eabi-size", "-t", str(cortex_m4_library)], capture_output=True, text=True).stdout
    text, data, bss = (int(v) for v in sizes.strip().splitlines()[-1].split()[:3])
    assert text > 0
    assert data == 0 and bss == 0, sizes
