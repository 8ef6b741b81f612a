"""Integer training needs no floating point: the kernel library builds for a
Cortex-M0+ (no FPU, soft-float ABI) with -Werror, and the integer training
kernels (--arithmetic int8: TFLMT_FULLY_CONNECTED_INT(_GRAD), TFLMT_LOSS_INT,
TFLMT_SGD_INT; through convolutions TFLMT_CONV_INT(_GRAD), TFLMT_POOL_INT_GRAD)
reference none of libgcc's soft-float helpers, neither in their own objects
nor with every kernel helper they reach linked in. The float kernels do
reference them, which shows the check can fail."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cross_build import build_kernels

pytestmark = pytest.mark.slow  # a CMake cross-build of every kernel: ~20 s

INTEGER_KERNELS = ("lora_int", "loss_int", "sgd_int", "conv_int_grad")
KERNEL_DEFS = ("kFullyConnectedIntKernel", "kFullyConnectedIntGradKernel", "kLossIntKernel", "kSgdIntKernel",
               "kConvIntKernel", "kConvIntGradKernel", "kPoolIntGradKernel")
# libgcc's soft-float entry points: the ARM EABI names (__aeabi_fadd,
# __aeabi_d2iz, __aeabi_fcmplt, ...) and the generic ones (__addsf3,
# __extendsfdf2, __eqsf2, __unordsf2, __fixsfsi, __floatsisf, ...).
SOFT_FLOAT = re.compile(r"^(__aeabi_[fd]\w*|__[a-z]+[sdt]f\d+|__fix\w*|__float\w*)$")


def undefined(path: Path) -> set[str]:
    out = subprocess.run(["arm-none-eabi-nm", "-u", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip() and not line.endswith(":")}


def soft_float(symbols: set[str]) -> list[str]:
    return sorted(s for s in symbols if SOFT_FLOAT.match(s))


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> Path:
    build = build_kernels(tmp_path_factory.mktemp("cortex-m0plus"), "cortex-m0plus")
    return build / "CMakeFiles/tflm_train_kernels.dir/kernels"


def test_the_library_is_built_for_armv6m(objects):
    attributes = subprocess.run(["arm-none-eabi-readelf", "-A", str(objects / "lora_int.cc.obj")],
                                capture_output=True, text=True, check=True).stdout
    assert "Tag_CPU_arch: v6S-M" in attributes, attributes  # Cortex-M0+ (ARMv6-M)
    assert "Tag_FP_arch" not in attributes and "VFP registers" not in attributes  # no FPU, soft-float ABI


@pytest.mark.parametrize("kernel", INTEGER_KERNELS)
def test_integer_kernel_objects_call_no_soft_float(objects, kernel):
    symbols = undefined(objects / f"{kernel}.cc.obj")
    assert symbols, "nm found no undefined symbol at all: the check would prove nothing"
    assert soft_float(symbols) == []


def test_float_kernels_do_call_soft_float(objects):
    """The control: on this target float code turns into these calls."""
    assert "__aeabi_fmul" in soft_float(undefined(objects / "loss.cc.obj"))
    assert soft_float(undefined(objects / "optimizer.cc.obj"))


def test_integer_kernels_with_their_helpers_call_no_soft_float(objects, tmp_path):
    """Linked with kernel_util (the Prepare checks they call), keeping only
    what the integer kernel definitions reach: still no soft-float helper. What
    remains undefined is the interpreter glue (port::) and integer helpers."""
    elf = tmp_path / "integer_kernels.elf"
    keep = []
    for name in KERNEL_DEFS:
        keep.append(f"-Wl,--undefined=_ZN5tflmt{len(name)}{name}E")
    sources = [str(objects / f"{k}.cc.obj") for k in INTEGER_KERNELS] + [str(objects / "kernel_util.cc.obj")]
    subprocess.run(
        ["arm-none-eabi-g++", "-mcpu=cortex-m0plus", "-mthumb", "-nostdlib", "-nostartfiles", "-Wl,--gc-sections",
         "-Wl,--unresolved-symbols=ignore-all", "-Wl,-e,0", *keep, *sources, "-o", str(elf)],
        check=True, capture_output=True,
    )
    defined = subprocess.run(["arm-none-eabi-nm", "--defined-only", str(elf)], capture_output=True, text=True).stdout
    assert all(name in defined for name in KERNEL_DEFS)
    symbols = undefined(elf)
    assert "__aeabi_lmul" in symbols  # 64-bit integer products: integer helpers are expected
    assert soft_float(symbols) == []
