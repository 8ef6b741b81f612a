"""reference/math.h: deterministic exp, expm1, log, log1p, tanh, logistic, pow.

They are built from IEEE basic operations only, so that a device and the host
compute the same bits. Here they are compiled for the host (with the kernels'
flags) and compared with float64 numpy over many inputs: the error, in float32
ulps of the exact value, must stay within 2 everywhere. Where
arm-none-eabi-g++ and qemu-system-arm are installed, the same hashes of their
results are computed on an emulated Cortex-M4F and must equal the host's.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_ULPS = 2.0

_PROBE = r"""
#include "reference/math.h"
using namespace tflmt::reference;
#define UNARY(name) \
  extern "C" void probe_##name(const float* x, float* y, int n) { \
    for (int i = 0; i < n; ++i) y[i] = name(x[i]); }
UNARY(Exp) UNARY(Expm1) UNARY(Log) UNARY(Log1p) UNARY(Tanh) UNARY(Logistic)
extern "C" void probe_Pow(const float* x, const float* e, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = Pow(x[i], e[i]);
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed")
    build = tmp_path_factory.mktemp("math")
    source = build / "probe.cc"
    source.write_text(_PROBE)
    library = build / "probe.so"
    subprocess.run([compiler, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-fno-rtti",
                    "-shared", "-fPIC", f"-I{ROOT / 'tflm_ops'}", str(source), "-o", str(library)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(library))


def call(probe, name: str, *args: np.ndarray) -> np.ndarray:
    args = [np.ascontiguousarray(a, np.float32) for a in args]
    out = np.empty_like(args[0])
    pointer = ctypes.POINTER(ctypes.c_float)
    getattr(probe, f"probe_{name}")(*[a.ctypes.data_as(pointer) for a in args], out.ctypes.data_as(pointer),
                                    ctypes.c_int(out.size))
    return out


def ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in float32 ulps at the exact value (exact in float64)."""
    exact32 = exact.astype(np.float32)
    finite = np.isfinite(exact32)
    spacing = np.spacing(np.abs(exact32[finite])).astype(np.float64)
    spacing = np.maximum(spacing, np.float64(np.finfo(np.float32).smallest_subnormal))
    error = np.zeros(got.shape)
    error[finite] = np.abs(got[finite].astype(np.float64) - exact[finite]) / spacing
    # Where the exact value overflows float32, the result must be +-inf.
    error[~finite] = np.where(got[~finite] == exact32[~finite], 0.0, np.inf)
    return error


def floats(rng, low, high, n=200_000) -> np.ndarray:
    """Uniform and log-spaced samples, plus exact edges."""
    uniform = rng.uniform(low, high, n)
    values = np.concatenate([uniform, [low, high, 0.0, 1.0, -1.0]]).astype(np.float32)
    return values[(values >= low) & (values <= high)]


def logspaced(rng, low_exponent, high_exponent, n=200_000, signed=True) -> np.ndarray:
    magnitude = 10.0 ** rng.uniform(low_exponent, high_exponent, n)
    sign = rng.choice([-1.0, 1.0], n) if signed else 1.0
    return (sign * magnitude).astype(np.float32)


CASES = {
    # name: (inputs, exact function in float64)
    "Exp": (lambda rng: np.concatenate([floats(rng, -103.9, 88.7), logspaced(rng, -30, 1.9)]), np.exp),
    "Expm1": (lambda rng: np.concatenate([floats(rng, -20, 20), logspaced(rng, -30, 1.9)]), np.expm1),
    "Log": (lambda rng: np.concatenate([logspaced(rng, -44, 38, signed=False), floats(rng, 0.5, 2.0)]), np.log),
    "Log1p": (lambda rng: np.concatenate([logspaced(rng, -30, 30, signed=False), floats(rng, -0.999, 3.0)]),
              np.log1p),
    "Tanh": (lambda rng: np.concatenate([floats(rng, -12, 12), logspaced(rng, -30, 1.2)]), np.tanh),
    "Logistic": (lambda rng: np.concatenate([floats(rng, -100, 100), logspaced(rng, -30, 1.5)]),
                 lambda x: 1.0 / (1.0 + np.exp(-x))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_unary_function_is_within_two_ulps(probe, name):
    rng = np.random.default_rng(7)
    make_inputs, exact = CASES[name]
    x = make_inputs(rng)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        error = ulps(call(probe, name, x), exact(x.astype(np.float64)))
    worst = int(np.argmax(error))
    assert error[worst] <= MAX_ULPS, f"{name}({x[worst]!r}): {error[worst]:.2f} ulps"


def test_pow_for_adams_bias_correction_is_within_two_ulps(probe):
    """beta^step for Adam's betas over a long run, and general positive bases."""
    steps = np.arange(1, 100_001, dtype=np.float32)
    bases = np.concatenate([np.full(steps.size, 0.9), np.full(steps.size, 0.999), np.full(steps.size, 0.99)])
    exponents = np.tile(steps, 3)
    rng = np.random.default_rng(8)
    bases = np.concatenate([bases, rng.uniform(0.01, 10.0, 100_000)]).astype(np.float32)
    exponents = np.concatenate([exponents, rng.uniform(-20.0, 20.0, 100_000)]).astype(np.float32)
    with np.errstate(over="ignore", under="ignore"):
        error = ulps(call(probe, "Pow", bases, exponents),
                     np.power(bases.astype(np.float64), exponents.astype(np.float64)))
    worst = int(np.argmax(error))
    assert error[worst] <= MAX_ULPS, f"Pow({bases[worst]!r}, {exponents[worst]!r}): {error[worst]:.2f} ulps"


def test_special_values(probe):
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    x = np.array([0.0, -0.0, inf, -inf, nan, 1e-45, -1e-45], np.float32)
    with np.errstate(all="ignore"):
        for name in CASES:
            got = call(probe, name, x)
            want = CASES[name][1](x.astype(np.float64)).astype(np.float32)
            both_nan = np.isnan(got) & np.isnan(want)
            close = np.isclose(got, want, rtol=2.5e-7, atol=0.0, equal_nan=True)
            assert np.all(both_nan | close), f"{name}: {got} vs {want}"
    assert call(probe, "Log", np.array([-1.0], np.float32))[0] != call(probe, "Log", np.array([-1.0], np.float32))[0]
    pow_cases = np.array([[0.9, 0.0], [0.0, 2.0], [1.0, 1e9], [0.5, 1e4]], np.float32)
    got = call(probe, "Pow", pow_cases[:, 0], pow_cases[:, 1])
    assert got.tolist() == [1.0, 0.0, 1.0, 0.0]


# ---- the same bits on a Cortex-M4F (QEMU mps2-an386) ------------------------------------
_HASH_PROBE = r"""
#include <cstdint>
#include <cstdio>
#include <cstring>
#include "reference/math.h"
using namespace tflmt::reference;
static uint32_t Bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }
static float Input(uint32_t i, float lo, float hi) {
  if (i % 4 == 0) { uint32_t b = i * 2654435761u; float f; std::memcpy(&f, &b, 4); return f; }
  return lo + (hi - lo) * static_cast<float>((i * 2246822519u) >> 8) / 16777216.0f;
}
template <typename F> static unsigned long Hash(F f, float lo, float hi, uint32_t n) {
  uint32_t h = 2166136261u;
  for (uint32_t i = 0; i < n; ++i) h = (h ^ Bits(f(Input(i, lo, hi)))) * 16777619u;
  return h;
}
int main() {
  const uint32_t n = 100000;
  std::printf("Exp %08lx\n", Hash([](float x) { return Exp(x); }, -104.f, 89.f, n));
  std::printf("Expm1 %08lx\n", Hash([](float x) { return Expm1(x); }, -20.f, 20.f, n));
  std::printf("Log %08lx\n", Hash([](float x) { return Log(x); }, 0.f, 100.f, n));
  std::printf("Log1p %08lx\n", Hash([](float x) { return Log1p(x); }, -1.f, 30.f, n));
  std::printf("Tanh %08lx\n", Hash([](float x) { return Tanh(x); }, -10.f, 10.f, n));
  std::printf("Logistic %08lx\n", Hash([](float x) { return Logistic(x); }, -100.f, 100.f, n));
  std::printf("Pow %08lx\n", Hash([](float x) { return Pow(0.999f, x); }, 1.f, 100000.f, 10000));
  return 0;
}
"""

# Just enough of a bare-metal image for mps2-an386: vector table, FPU on,
# newlib's semihosting crt0 (rdimon) for main and printf.
_STARTUP = r"""
#include <stdint.h>
extern void _start(void);
extern uint32_t __stack_top;
void Reset(void) {
  *(volatile uint32_t*)0xE000ED88 |= (0xFu << 20);
  __asm volatile("dsb; isb");
  _start();
  for (;;) {}
}
static void Hang(void) { for (;;) {} }
__attribute__((section(".vectors"), used)) void (*const vectors[16])(void) = {
  (void (*)(void))&__stack_top, Reset, Hang, Hang, Hang, Hang, Hang, 0, 0, 0, 0, Hang, Hang, 0, Hang, Hang};
"""

_LINKER_SCRIPT = """
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M  RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M }
ENTRY(Reset)
SECTIONS {
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) KEEP(*(.init)) KEEP(*(.fini)) . = ALIGN(4);
            __init_array_start = .; KEEP(*(.init_array*)) __init_array_end = .;
            __preinit_array_start = .; KEEP(*(.preinit_array*)) __preinit_array_end = .;
            __fini_array_start = .; KEEP(*(.fini_array*)) __fini_array_end = .; } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  .eh_frame : { KEEP(*(.eh_frame)) } > FLASH
  .data : { *(.data*) . = ALIGN(4); } > RAM
  .bss : { __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end__ = .; } > RAM
  end = .; _end = .; __end__ = .;
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}
"""

M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
# The kernels' flags that matter for floating point (tflm_ops/CMakeLists.txt).
FP_FLAGS = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-exceptions", "-fno-rtti"]


def test_cortex_m4f_computes_the_same_bits_as_the_host(tmp_path):
    tools = [shutil.which(t) for t in ("g++", "arm-none-eabi-g++", "arm-none-eabi-gcc", "qemu-system-arm")]
    if None in tools:
        if os.environ.get("TFLMT_REQUIRE_QEMU") == "1":
            pytest.fail("g++, arm-none-eabi-g++ and qemu-system-arm are required here")
        pytest.skip("needs arm-none-eabi-g++ and qemu-system-arm")
    include = f"-I{ROOT / 'tflm_ops'}"
    (tmp_path / "probe.cc").write_text(_HASH_PROBE)
    (tmp_path / "startup.c").write_text(_STARTUP)
    (tmp_path / "link.ld").write_text(_LINKER_SCRIPT)
    subprocess.run(["g++", *FP_FLAGS, include, "probe.cc", "-o", "host"], cwd=tmp_path, check=True, capture_output=True)
    host = subprocess.run([str(tmp_path / "host")], check=True, capture_output=True, text=True).stdout
    for command in (
        ["arm-none-eabi-g++", *M4_FLAGS, *FP_FLAGS, include, "-c", "probe.cc", "-o", "probe.o"],
        ["arm-none-eabi-gcc", *M4_FLAGS, "-O2", "-c", "startup.c", "-o", "startup.o"],
        ["arm-none-eabi-g++", *M4_FLAGS, "--specs=rdimon.specs", "-T", "link.ld", "startup.o", "probe.o", "-o",
         "probe.elf"],
    ):
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    device = subprocess.run(
        ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-semihosting-config", "enable=on,target=native",
         "-kernel", str(tmp_path / "probe.elf")],
        capture_output=True, text=True, timeout=600,
    ).stdout
    assert len(host.splitlines()) == 7
    assert device.splitlines() == host.splitlines()
